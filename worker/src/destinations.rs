//! Where outbound webhook calls may go: public addresses only, unless the deployment
//! allows private networks. Checked on the URL's literal address and again on every name
//! resolution (a resolver that drops private answers, so a name cannot be re-pointed at
//! an internal host between the check and the connection).

use std::net::{IpAddr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// True for addresses a webhook may reach from a default deployment: not loopback,
/// private, link-local (cloud metadata), shared (CGNAT), unique-local, multicast,
/// broadcast, documentation or unspecified.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

/// A resolver that keeps only public addresses.
#[derive(Debug, Default)]
pub(crate) struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if addresses.is_empty() {
                return Err(format!("{host} resolves only to private or local addresses").into());
            }
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

/// Why `url` may not be called, if it may not: its host is (or resolves only to) a
/// non-public address.
pub(crate) async fn refused(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let port = parsed.port_or_known_default().unwrap_or(443);
    let host = parsed.host_str()?;
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<IpAddr> = match literal.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => match tokio::net::lookup_host((host, port)).await {
            Ok(found) => found.map(|a| a.ip()).collect(),
            // Unresolvable now: the request fails (retryably) on its own.
            Err(_) => return None,
        },
    };
    if addresses.iter().any(|ip| !is_public(*ip)) {
        Some(format!(
            "{url} points to a private or local address ({}); webhooks go to public \
             addresses unless CC_WEBHOOK_ALLOW_PRIVATE_NETWORKS is set",
            addresses
                .iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_not_public() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(internal.parse().unwrap()), "{internal}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn urls_to_internal_hosts_are_refused() {
        assert!(refused("http://127.0.0.1:9000/hook").await.is_some());
        assert!(refused("http://[::1]/hook").await.is_some());
        assert!(refused("http://localhost/hook").await.is_some());
        assert!(refused("https://93.184.216.34/hook").await.is_none());
    }
}
