//! The `[connector]` config section: every Cloud Connector lifetime, timer and limit, with the
//! defaults the issue and `pairing-relay.md` section 2 give. Durations are milliseconds so that
//! tests can shrink them (pings, grace) without waiting.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectorConfig {
    /// Serve the token endpoint and the WebSocket listeners on the main listener.
    pub enabled: bool,
    /// The base URL devices and POS reach this node at (`wss://relay.example.com`). Connection
    /// and session URLs, and the audience of their JWTs, start with it. None: built from the
    /// request's Host header and whether TLS is on.
    pub public_url: Option<String>,
    /// The HS256 key for access tokens and connection JWTs (32 random bytes, hex). Created on
    /// first start when missing. Nodes of one deployment must share the same file. None: the
    /// file `connector.key` beside the store folder.
    pub secret_file: Option<PathBuf>,
    /// Lifetime of an OAuth2 access token.
    pub access_token_seconds: u32,
    /// Lifetime of a single-use connection (device) or session (POS) JWT.
    pub connection_token_seconds: u32,
    /// Argon2id cost for client secrets created from now on (stored hashes keep their own).
    pub hash_memory_kib: u32,
    pub hash_iterations: u32,
    /// Token requests hashing at once; more wait, then get 503 temporarily_unavailable.
    pub hash_concurrency: usize,
    /// Time a listener waits for the register or claim message.
    pub listener_timeout_ms: u64,
    /// The server pings each peer this often ...
    pub ping_interval_ms: u64,
    /// ... and drops a peer whose pong has not come this long after a ping.
    pub pong_timeout_ms: u64,
    /// A device that drops without a close frame may reconnect this long; its session waits.
    pub reconnect_grace_ms: u64,
    /// Messages held for an absent device during the grace: count and bytes.
    pub buffer_messages: usize,
    pub buffer_bytes: usize,
    /// Largest WebSocket frame and message accepted (close 1009 beyond).
    pub max_frame_bytes: usize,
    pub max_message_bytes: usize,
    /// Bytes queued towards one peer before it counts as a slow consumer (close 1008).
    pub max_queued_bytes: usize,
    /// Time one write to a peer may take before it counts as a slow consumer (close 1008).
    pub send_timeout_ms: u64,
    /// A session with no message either way this long is closed (4003).
    pub idle_timeout_ms: u64,
    /// A session is closed this long after its claim, whatever the traffic (4004).
    pub max_session_ms: u64,
    /// Most live sessions on this node (claims beyond get 503 too_many_sessions).
    pub max_sessions: usize,
    /// Most connected devices on this node (connections beyond get 503 too_many_devices).
    pub max_devices: usize,
    /// A device's presence in the store reads as offline once its node's heartbeat is this old
    /// (a node that died cannot mark its devices offline). The node refreshes the presence of
    /// the devices it holds every third of it.
    pub presence_ttl_ms: u64,
    /// A terminal registered with RegisterTerminal may present its TerminalAccessToken at the
    /// device listener instead of an OAuth2 access token (issue 12's option beyond the seed).
    pub terminal_tokens: bool,
}

impl Default for ConnectorConfig {
    fn default() -> Self {
        ConnectorConfig {
            enabled: true,
            public_url: None,
            secret_file: None,
            access_token_seconds: 3600,
            connection_token_seconds: 60,
            // OWASP's Argon2id minimum (19 MiB, 2 passes, 1 lane).
            hash_memory_kib: 19 * 1024,
            hash_iterations: 2,
            hash_concurrency: 4,
            listener_timeout_ms: 10_000,
            ping_interval_ms: 15_000,
            pong_timeout_ms: 10_000,
            reconnect_grace_ms: 60_000,
            buffer_messages: 256,
            buffer_bytes: 1 << 20,
            max_frame_bytes: 128 << 10,
            max_message_bytes: 1 << 20,
            max_queued_bytes: 4 << 20,
            send_timeout_ms: 10_000,
            idle_timeout_ms: 600_000,
            max_session_ms: 12 * 3600 * 1000,
            max_sessions: 10_000,
            max_devices: 100_000,
            presence_ttl_ms: 90_000,
            terminal_tokens: true,
        }
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl ConnectorConfig {
    /// Resolve a relative `secret_file` against the config file's folder.
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(p) = self.secret_file.as_mut() {
            *p = base.join(&*p);
        }
    }

    /// The key file: the configured one, or `connector.key` beside the store folder.
    pub fn secret_path(&self, store_path: &Path) -> PathBuf {
        match &self.secret_file {
            Some(p) => p.clone(),
            None => store_path
                .parent()
                .unwrap_or(Path::new("."))
                .join("connector.key"),
        }
    }

    pub fn listener_timeout(&self) -> Duration {
        ms(self.listener_timeout_ms)
    }
    pub fn ping_interval(&self) -> Duration {
        ms(self.ping_interval_ms.max(1))
    }
    pub fn pong_timeout(&self) -> Duration {
        ms(self.pong_timeout_ms.max(1))
    }
    pub fn reconnect_grace(&self) -> Duration {
        ms(self.reconnect_grace_ms)
    }
    pub fn send_timeout(&self) -> Duration {
        ms(self.send_timeout_ms.max(1))
    }
    pub fn idle_timeout(&self) -> Duration {
        ms(self.idle_timeout_ms.max(1))
    }
    pub fn max_session(&self) -> Duration {
        ms(self.max_session_ms.max(1))
    }
    /// The presence lifetime in milliseconds, at least 300: the heartbeat walks every held
    /// device each third of it, so a tiny value would keep a core busy.
    pub fn presence_ttl(&self) -> u64 {
        self.presence_ttl_ms.max(300)
    }
    pub fn presence_refresh(&self) -> Duration {
        ms(self.presence_ttl() / 3)
    }

    /// tungstenite's limits, every one set here rather than left to its defaults.
    pub fn websocket(&self) -> crate::ws::WebSocketConfig {
        crate::ws::WebSocketConfig::default()
            // tungstenite zero-fills the whole read buffer: it is resident for every connection
            // (64 KiB made 60 KiB per idle device; docs/BENCHMARKS.md). Larger frames reserve
            // their own length anyway.
            .read_buffer_size(4 << 10)
            .write_buffer_size(16 << 10)
            // A write that cannot reach the socket fails here rather than buffering without end;
            // our own queue bound (`max_queued_bytes`) is the one that closes with 1008.
            .max_write_buffer_size(self.max_message_bytes.saturating_mul(2).max(128 << 10))
            .max_message_size(Some(self.max_message_bytes))
            .max_frame_size(Some(self.max_frame_bytes))
            .accept_unmasked_frames(false)
    }
}
