//! The ZMQ side, as vLLM's `ZmqEventPublisher`: a PUB socket sends every
//! batch as `[topic, sequence: u64 big-endian, payload]`, and an optional
//! ROUTER socket replays the last `buffer_steps` batches to a subscriber
//! that missed some: it sends an 8-byte big-endian start sequence and gets
//! back each buffered `[sequence, payload]` from there on, then
//! `[-1 as i64 big-endian, ""]`.

use std::collections::VecDeque;

use anyhow::{Context, Result};
use bytes::Bytes;
use pagoda_engine::kv_events::KvEventBatch;
use tokio::sync::mpsc;
use zeromq::{PubSocket, RouterSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

use super::config::{bind_address, KvEventsConfig};
use super::wire::encode_batch;

/// Ends a replay, as vLLM's `END_SEQ`.
const END_SEQ: [u8; 8] = (-1i64).to_be_bytes();

pub struct KvEventPublisher {
    config: KvEventsConfig,
    socket: PubSocket,
    replay: Option<RouterSocket>,
    /// The first frame of every message, made once.
    topic: Bytes,
    /// (sequence, payload) of the latest batches, for replay.
    buffer: VecDeque<(u64, Bytes)>,
    next_seq: u64,
}

impl KvEventPublisher {
    /// Binds (or connects) the sockets, so a bad endpoint fails at start-up.
    pub async fn open(config: KvEventsConfig) -> Result<Self> {
        let mut socket = PubSocket::new();
        if config.binds() {
            socket
                .bind(&bind_address(&config.endpoint))
                .await
                .with_context(|| format!("cannot bind the KV-event socket {}", config.endpoint))?;
        } else {
            socket.connect(&config.endpoint).await.with_context(|| {
                format!("cannot connect the KV-event socket {}", config.endpoint)
            })?;
        }
        let replay = match &config.replay_endpoint {
            None => None,
            Some(endpoint) => {
                let mut router = RouterSocket::new();
                router
                    .bind(&bind_address(endpoint))
                    .await
                    .with_context(|| {
                        format!("cannot bind the KV-event replay socket {endpoint}")
                    })?;
                Some(router)
            }
        };
        tracing::info!(
            "Publishing KV-cache events on {} (replay: {})",
            config.endpoint,
            config.replay_endpoint.as_deref().unwrap_or("off")
        );
        Ok(Self {
            buffer: VecDeque::with_capacity(config.buffer_steps.min(1 << 16)),
            topic: Bytes::from(config.topic.clone().into_bytes()),
            config,
            socket,
            replay,
            next_seq: 0,
        })
    }

    /// Publishes batches until the engine's sink is gone, answering replay
    /// requests in between.
    pub async fn run(mut self, mut batches: mpsc::Receiver<KvEventBatch>) {
        loop {
            let replay_request = async {
                match self.replay.as_mut() {
                    Some(router) => router.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                batch = batches.recv() => match batch {
                    Some(batch) => self.publish(&batch).await,
                    None => break,
                },
                request = replay_request => match request {
                    Ok(request) => self.replay(request).await,
                    Err(e) => tracing::warn!("KV-event replay socket: {e}"),
                },
            }
        }
    }

    async fn publish(&mut self, batch: &KvEventBatch) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let payload = Bytes::from(encode_batch(batch));
        let frames = vec![
            self.topic.clone(),
            Bytes::copy_from_slice(&seq.to_be_bytes()),
            payload.clone(),
        ];
        if let Ok(message) = ZmqMessage::try_from(frames) {
            if let Err(e) = self.socket.send(message).await {
                tracing::warn!("KV-event batch {seq} not sent: {e}");
            }
        }
        if self.config.buffer_steps > 0 {
            if self.buffer.len() == self.config.buffer_steps {
                self.buffer.pop_front();
            }
            self.buffer.push_back((seq, payload));
        }
    }

    /// Answers `[identity, "", start_seq]` (a REQ client's envelope).
    async fn replay(&mut self, request: ZmqMessage) {
        let frames = request.into_vec();
        let [identity, delimiter, start] = &frames[..] else {
            tracing::warn!(
                "KV-event replay: a request of {} frames ignored",
                frames.len()
            );
            return;
        };
        let Ok(start) = <[u8; 8]>::try_from(start.as_ref()) else {
            tracing::warn!("KV-event replay: the start sequence is not 8 bytes");
            return;
        };
        let start = u64::from_be_bytes(start);
        let Some(router) = self.replay.as_mut() else {
            return;
        };
        let replies = self
            .buffer
            .iter()
            .filter(|(seq, _)| *seq >= start)
            .map(|(seq, payload)| (Bytes::copy_from_slice(&seq.to_be_bytes()), payload.clone()))
            .chain(std::iter::once((
                Bytes::from_static(&END_SEQ),
                Bytes::new(),
            )));
        for (seq, payload) in replies {
            let frames = vec![identity.clone(), delimiter.clone(), seq, payload];
            let Ok(message) = ZmqMessage::try_from(frames) else {
                return;
            };
            if let Err(e) = router.send(message).await {
                tracing::warn!("KV-event replay not sent: {e}");
                return;
            }
        }
    }
}
