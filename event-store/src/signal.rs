//! Post-commit wake-ups for tailing readers (the feed's long poll, later the relay).
//!
//! The appender fires the signal *after* its transaction commits: in process through a
//! `watch` channel, and across processes as an empty core NATS message on
//! `<prefix>.signal.appended`. A process bridges that subject into its own channel.
//! A missed or duplicated signal is harmless: readers also poll, and a wake-up only
//! makes them read the feed again.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::watch;

/// The longest an append waits to hand its wake-up to the NATS client.
const PUBLISH_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(20);

/// Wakes readers after events commit.
#[derive(Clone)]
pub struct AppendSignal {
    sender: Arc<watch::Sender<u64>>,
    nats: Option<(async_nats::Client, String)>,
}

impl AppendSignal {
    /// A signal that only reaches readers in this process.
    pub fn local() -> Self {
        Self {
            sender: Arc::new(watch::Sender::new(0)),
            nats: None,
        }
    }

    /// A signal that also reaches other processes through core NATS.
    pub fn with_nats(client: async_nats::Client, subject_prefix: &str) -> Self {
        Self {
            sender: Arc::new(watch::Sender::new(0)),
            nats: Some((client, Self::subject(subject_prefix))),
        }
    }

    /// The NATS subject wake-ups travel on.
    pub fn subject(subject_prefix: &str) -> String {
        format!("{subject_prefix}.signal.appended")
    }

    /// Tells every reader that new events committed. Call only after the commit.
    pub async fn fire(&self) {
        self.wake_local();
        if let Some((client, subject)) = &self.nats {
            // Never let a NATS outage slow an append down: skip while disconnected, and
            // bound the wait for buffer space.
            if client.connection_state() != async_nats::connection::State::Connected {
                return;
            }
            let publish = client.publish(subject.clone(), bytes::Bytes::new());
            match tokio::time::timeout(PUBLISH_TIMEOUT, publish).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::debug!(%err, "append wake-up not published; readers poll"),
                Err(_) => tracing::debug!("append wake-up timed out; readers poll"),
            }
        }
    }

    fn wake_local(&self) {
        self.sender.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that changes on every wake-up from now on.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.sender.subscribe()
    }

    /// Forwards wake-ups sent by other processes into this process's channel. Returns
    /// the forwarding loop for the caller to own and run (it ends when NATS closes the
    /// subscription), or `None` for a local-only signal.
    pub async fn bridge_from_nats(
        &self,
    ) -> Result<
        Option<impl std::future::Future<Output = ()> + Send + 'static>,
        async_nats::SubscribeError,
    > {
        let Some((client, subject)) = &self.nats else {
            return Ok(None);
        };
        let mut subscription = client.subscribe(subject.clone()).await?;
        let this = self.clone();
        Ok(Some(async move {
            while subscription.next().await.is_some() {
                this.wake_local();
            }
        }))
    }
}
