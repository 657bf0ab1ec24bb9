//! The OpenAPI document and the router agree: the router is built from the documented
//! handlers only, so every documented operation is answered, no documented path answers
//! an undocumented method, and every route the issues promise is documented.

use serde_json::{json, Value};

use crate::helpers::spawn_app;

const METHODS: &[&str] = &["get", "post", "patch", "delete", "put"];

/// Every operation the product promises (the existing product's paths, and ours).
const PROMISED: &[(&str, &str)] = &[
    ("post", "/api/v1/technologies"),
    ("get", "/api/v1/technologies"),
    ("get", "/api/v1/technologies/{id}"),
    ("patch", "/api/v1/technologies/{id}"),
    ("delete", "/api/v1/technologies/{id}"),
    ("get", "/api/v1/technologies/{id}/history"),
    ("post", "/api/v1/jobs"),
    ("get", "/api/v1/jobs"),
    ("get", "/api/v1/jobs/{id}"),
    ("patch", "/api/v1/jobs/{id}"),
    ("delete", "/api/v1/jobs/{id}"),
    ("post", "/api/v1/jobs/{id}/dispatch"),
    ("post", "/api/v1/jobs/{id}/cancel"),
    ("get", "/api/v1/jobs/{id}/progress"),
    ("get", "/api/v1/jobs/{id}/history"),
    ("get", "/api/v1/jobs/active/list"),
    ("get", "/api/v1/jobs/statistics/summary"),
    ("get", "/api/v1/jobs/ws/{job_id}"),
    ("get", "/api/v1/ws"),
    ("get", "/api/v1/dashboard/stats"),
    ("get", "/api/v1/events"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/health/live"),
    ("get", "/health/ready"),
];

fn concrete(path: &str) -> String {
    let id = uuid::Uuid::now_v7().to_string();
    path.replace("{id}", &id).replace("{job_id}", &id)
}

/// True when the router itself had no route for the request (405, or a 404 of problem
/// type `no-route`), as opposed to a handler answering (a handler's 404 is `not-found`).
async fn unrouted(response: reqwest::Response) -> bool {
    let status = response.status().as_u16();
    let problem = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if status == 405 {
        return true;
    }
    if status != 404 || !problem {
        return false;
    }
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    body["type"] == "urn:commandcenter:problem:no-route"
}

async fn call(app: &crate::helpers::TestApp, method: &str, path: &str) -> reqwest::Response {
    let url = app.url(&concrete(path));
    let request = match method {
        "get" => app.client.get(url),
        "post" => app.client.post(url).json(&json!({})),
        "patch" => app.client.patch(url).json(&json!({})),
        "delete" => app.client.delete(url),
        "put" => app.client.put(url).json(&json!({})),
        other => panic!("no such method {other}"),
    };
    request.send().await.expect("request sent")
}

#[tokio::test]
async fn the_document_and_the_router_describe_the_same_routes() {
    let app = spawn_app().await;
    let response = app.get("/api/v1/openapi.json").await;
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["info"]["title"], "CommandCenter");
    let paths = document["paths"].as_object().expect("paths");

    for (method, path) in PROMISED {
        assert!(
            paths.get(*path).and_then(|p| p.get(*method)).is_some(),
            "{method} {path} is documented"
        );
    }
    for (path, operations) in paths {
        for method in METHODS {
            let response = call(&app, method, path).await;
            if operations.get(*method).is_some() {
                let status = response.status();
                assert!(
                    !unrouted(response).await,
                    "documented {method} {path} is answered ({status})",
                );
            } else {
                assert_eq!(
                    response.status(),
                    405,
                    "undocumented {method} {path} is not routed"
                );
            }
        }
        // Every documented operation says what it answers.
        for (method, operation) in operations.as_object().unwrap() {
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty()),
                "{method} {path} documents its responses"
            );
        }
    }
    for stray in [
        "/api/v1/nothing",
        "/api/v1/technologies/x/y/z",
        "/api/v2/jobs",
    ] {
        assert!(unrouted(app.get(stray).await).await, "{stray} has no route");
    }
    // Request bodies are described from the very types the handlers parse.
    let schemas = document["components"]["schemas"].as_object().unwrap();
    for schema in [
        "CreateTechnologyBody",
        "UpdateTechnologyBody",
        "CreateJobBody",
        "PatchJobBody",
    ] {
        assert!(schemas.contains_key(schema), "{schema} documented");
    }
    assert!(schemas["CreateTechnologyBody"]["properties"]
        .get("title")
        .is_some());
    // The key scheme, and on every operation the roles the guard admits.
    assert_eq!(
        document["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
    let mut public = Vec::new();
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            let security = operation["security"]
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path} states its security"));
            if security == &vec![json!({})] {
                public.push(format!("{method} {path}"));
            } else {
                assert!(
                    security[0]["api_key"]
                        .as_array()
                        .is_some_and(|r| !r.is_empty()),
                    "{method} {path}: {security:?}"
                );
            }
        }
    }
    public.sort();
    assert_eq!(
        public,
        [
            "get /api/v1/openapi.json",
            "get /health",
            "get /health/live",
            "get /health/ready",
            "get /metrics"
        ]
    );
    assert_eq!(
        paths["/api/v1/technologies"]["post"]["security"],
        json!([{"api_key": ["writer", "admin"]}])
    );
}

/// The operations whose error answers are not problem documents: readiness answers its
/// own report whatever its status.
const OWN_ERROR_BODIES: &[(&str, &str, &str)] =
    &[("get", "/health/ready", "503"), ("get", "/health", "503")];

#[tokio::test]
async fn the_document_describes_every_answer_and_every_enum() {
    let app = spawn_app().await;
    let document: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let paths = document["paths"].as_object().expect("paths");
    let schemas = document["components"]["schemas"].as_object().unwrap();
    let problem = json!({"$ref": "#/components/schemas/Problem"});
    assert!(
        schemas.contains_key("Problem"),
        "the problem schema is a component"
    );

    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            for (status, response) in responses {
                let content = response["content"].as_object();
                if status.starts_with('2') && status != "204" {
                    // Every success with a body says what the body is.
                    let content =
                        content.unwrap_or_else(|| panic!("{method} {path} {status} has content"));
                    assert!(
                        content.values().all(|c| c.get("schema").is_some()),
                        "{method} {path} {status} has a schema: {content:?}"
                    );
                } else if status.starts_with(['4', '5'])
                    && !OWN_ERROR_BODIES.contains(&(
                        method.as_str(),
                        path.as_str(),
                        status.as_str(),
                    ))
                {
                    let schema = content
                        .and_then(|c| c.get("application/problem+json"))
                        .map(|c| &c["schema"]);
                    assert_eq!(
                        schema,
                        Some(&problem),
                        "{method} {path} {status} is a problem document"
                    );
                }
            }
            // Every guarded operation says what the guard answers.
            if operation["security"] != json!([{}]) {
                for status in ["401", "403", "429", "503"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path} documents {status}"
                    );
                }
            }
            // Header parameters carry their form.
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                if parameter["in"] == "header" {
                    assert!(
                        parameter["schema"]["pattern"].is_string()
                            || parameter["schema"]["type"] == "integer",
                        "{method} {path}: header {} has a form",
                        parameter["name"]
                    );
                }
            }
        }
    }
    // Bounds on parameters.
    let limit = paths["/api/v1/technologies"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    // Given empty, a parameter is read as absent: its own form, or "".
    let form = &limit["schema"]["anyOf"][0];
    assert_eq!(form["minimum"], 1);
    assert_eq!(form["maximum"], 1000);
    assert_eq!(limit["schema"]["anyOf"][1]["maxLength"], 0);

    // Every closed set of the domain, with exactly the names it accepts.
    use commandcenter_domain::job::{JobStatus, JobType};
    use commandcenter_domain::technology::{
        CostTier, IntegrationDifficulty, MaturityLevel, TechnologyDomain, TechnologyStatus,
    };
    for (name, names) in [
        ("TechnologyDomain", TechnologyDomain::ALL),
        ("TechnologyStatus", TechnologyStatus::ALL),
        ("IntegrationDifficulty", IntegrationDifficulty::ALL),
        ("MaturityLevel", MaturityLevel::ALL),
        ("CostTier", CostTier::ALL),
        ("JobStatus", JobStatus::ALL),
        ("JobType", JobType::ALL),
    ] {
        assert_eq!(
            schemas[name]["enum"],
            json!(names),
            "{name} is documented as an enum"
        );
    }
    // A job's parameters: one form per job type, every type covered.
    let forms = schemas["JobParametersForm"]["anyOf"].as_array().unwrap();
    let titled: Vec<&str> = forms
        .iter()
        .flat_map(|f| f["title"].as_str().unwrap().split(", "))
        .collect();
    for job_type in JobType::ALL {
        assert!(titled.contains(job_type), "{job_type} has a parameter form");
    }
    assert!(forms.iter().all(|f| f["additionalProperties"] == false));
    assert_eq!(
        schemas["Role"]["enum"],
        json!(["reader", "writer", "auditor", "admin"])
    );
    // Bodies are described with their bounds, answers from the types that write them.
    let create = &schemas["CreateTechnologyBody"];
    assert_eq!(create["additionalProperties"], false);
    assert_eq!(
        create["properties"]["title"]["$ref"],
        "#/components/schemas/Title"
    );
    assert_eq!(schemas["Score"]["maximum"], 100);
    assert_eq!(schemas["Priority"]["minimum"], 1);
    let created = &paths["/api/v1/technologies"]["post"]["responses"]["201"];
    assert_eq!(
        created["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Technology"
    );
    assert_eq!(
        created["links"]["GetTechnology"]["operationId"], "get_technology",
        "{created}"
    );
}

/// The headers the document says an answer carries are the ones it carries: the version,
/// position and new resource of writes, the position and source of reads, the scheme of
/// a 401 and the wait of a 503, each in its documented form.
#[tokio::test]
async fn answers_carry_the_headers_the_document_describes() {
    let app = spawn_app().await;
    let document: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let check = |method: &str, path: &str, response: &reqwest::Response| {
        let status = response.status().as_str().to_string();
        let documented = &document["paths"][path][method]["responses"][&status]["headers"];
        let documented = documented
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} {status} documents its headers"));
        assert!(!documented.is_empty());
        for (name, header) in documented {
            let value = response.headers().get(name.as_str());
            if header["required"] == true {
                assert!(value.is_some(), "{method} {path} {status} sends {name}");
            }
            if let (Some(value), Some(pattern)) = (value, header["schema"]["pattern"].as_str()) {
                let value = value.to_str().unwrap();
                assert!(
                    regex::Regex::new(pattern).unwrap().is_match(value),
                    "{method} {path} {status}: {name}: {value} matches {pattern}"
                );
            }
        }
        documented.len()
    };
    let mut checked = 0;
    let created = app
        .post(
            "/api/v1/technologies",
            &json!({"project_id": 1, "title": "Headers"}),
        )
        .await;
    checked += check("post", "/api/v1/technologies", &created);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let detail = format!("/api/v1/technologies/{id}");
    let patched = app.patch(&detail, &json!({"priority": 5})).await;
    checked += check("patch", "/api/v1/technologies/{id}", &patched);
    app.wait_caught_up().await;
    for (template, path) in [
        ("/api/v1/technologies", "/api/v1/technologies".to_string()),
        ("/api/v1/technologies/{id}", detail.clone()),
        (
            "/api/v1/technologies/{id}/history",
            format!("{detail}/history"),
        ),
        (
            "/api/v1/dashboard/stats",
            "/api/v1/dashboard/stats".to_string(),
        ),
        ("/api/v1/events", "/api/v1/events".to_string()),
    ] {
        // Twice: the second answer may come from the cache.
        for _ in 0..2 {
            checked += check("get", template, &app.get(&path).await);
        }
    }
    let as_of = app.get(&format!("{detail}?as_of_version=1")).await;
    assert_eq!(as_of.headers()["x-cc-source"], "event-store");
    checked += check("get", "/api/v1/technologies/{id}", &as_of);
    let job = app
        .post(
            "/api/v1/jobs",
            &json!({"project_id": 1, "job_type": "noop"}),
        )
        .await;
    checked += check("post", "/api/v1/jobs", &job);
    let job_id = job.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dispatched = app
        .post(&format!("/api/v1/jobs/{job_id}/dispatch"), &json!({}))
        .await;
    checked += check("post", "/api/v1/jobs/{id}/dispatch", &dispatched);
    let deleted = app.delete(&detail).await;
    checked += check("delete", "/api/v1/technologies/{id}", &deleted);
    let anonymous = reqwest::Client::new()
        .get(app.url("/api/v1/technologies"))
        .send()
        .await
        .unwrap();
    checked += check("get", "/api/v1/technologies", &anonymous);
    // A position the read model will not reach within the bound: 503, retry later.
    let unreachable = app
        .client
        .get(app.url("/api/v1/technologies"))
        .header("X-CC-Min-Position", "7fffffffffffffff0fffffffffffffff")
        .send()
        .await
        .unwrap();
    assert_eq!(unreachable.status(), 503);
    checked += check("get", "/api/v1/technologies", &unreachable);
    assert!(checked >= 26, "{checked} headers checked");
}
