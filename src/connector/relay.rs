//! The relay loop: one task per connected device or POS, moving opaque frames (text and binary,
//! in order) between the WebSocket and the registry. It knows nothing of payments. Each task
//! pings its peer, drops it when no pong comes in time, closes on the limits (1009 too big, 1008
//! slow consumer, 4003 idle, 4004 session lifetime) and on orders from the registry (4001
//! replaced, 4002 device gone), and reports how it ended under its generation number.

use super::error::close;
use super::registry::{End, Forwarded, Inbox, Slot};
use super::Connector;
use crate::metrics::DropReason;
use crate::ws::ServerStream;
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Most queued messages written before one flush.
const BATCH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Device,
    Pos,
}

/// Send a close frame, waiting at most the send timeout (a dead peer cannot stall us).
pub async fn send_close<S>(sink: &mut S, c: &Connector, code: u16, reason: &str)
where
    S: futures_util::Sink<Message> + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    };
    let _ = tokio::time::timeout(
        c.config.send_timeout(),
        sink.send(Message::Close(Some(frame))),
    )
    .await;
}

/// Run one connection until it ends; then tell the registry, under this generation.
pub async fn run(
    c: Arc<Connector>,
    ws: ServerStream,
    role: Role,
    slot: Arc<Slot>,
    gen: u64,
    mut inbox: Inbox,
) {
    c.live.fetch_add(1, Ordering::AcqRel);
    let end = pump(&c, ws, role, &slot, gen, &mut inbox).await;
    match role {
        Role::Pos => c.registry.detach_pos(&slot, gen),
        Role::Device => {
            let now = c.now_ms();
            let offline = || c.presence_offline(&slot.tsn);
            if c.registry
                .detach_device(&slot, gen, end, now, &mut inbox, offline)
            {
                let c2 = c.clone();
                let grace = c.config.reconnect_grace();
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    let offline = || c2.presence_offline(&slot.tsn);
                    c2.registry.grace_expired(&slot, gen, offline);
                });
            }
        }
    }
    if c.live.fetch_sub(1, Ordering::AcqRel) == 1 {
        c.gone.notify_waiters();
    }
}

async fn pump(
    c: &Connector,
    ws: ServerStream,
    role: Role,
    slot: &Slot,
    gen: u64,
    inbox: &mut Inbox,
) -> End {
    let cfg = &c.config;
    let (mut sink, mut stream) = ws.split();
    let start = Instant::now();
    // Timers live for the whole connection and are only reset when they fire (or a ping goes
    // out): no timer is armed or disarmed per message.
    let ping = sleep_until(start + cfg.ping_interval());
    let pong = sleep_until(start);
    let mut pong_armed = false;
    // Sessions only: the POS task sees all of a session's traffic, so it keeps their timers.
    let session = role == Role::Pos;
    let lifetime = sleep_until(start + cfg.max_session());
    let idle = sleep_until(start + cfg.idle_timeout());
    let mut last_traffic = start;
    tokio::pin!(ping, pong, lifetime, idle);
    loop {
        // Close orders overtake queued messages (a slow consumer's backlog is dropped).
        if let Ok(order) = inbox.control.try_recv() {
            send_close(&mut sink, c, order.code, order.reason).await;
            return End::Closed;
        }
        tokio::select! {
            order = inbox.control.recv() => {
                if let Some(order) = order {
                    send_close(&mut sink, c, order.code, order.reason).await;
                }
                return End::Closed;
            }
            _ = &mut pong, if pong_armed => {
                c.metrics.count_drop(DropReason::NoPong);
                send_close(&mut sink, c, close::NO_PONG, "no pong").await;
                return End::Dropped;
            }
            _ = &mut lifetime, if session => {
                c.metrics.count_drop(DropReason::Timeout);
                send_close(&mut sink, c, close::SESSION_LIMIT, "session lifetime reached").await;
                return End::Closed;
            }
            _ = &mut idle, if session => {
                let due = last_traffic + cfg.idle_timeout();
                if Instant::now() < due {
                    idle.as_mut().reset(due);
                    continue;
                }
                c.metrics.count_drop(DropReason::Timeout);
                send_close(&mut sink, c, close::IDLE, "session idle").await;
                return End::Closed;
            }
            _ = &mut ping => {
                let now = Instant::now();
                ping.as_mut().reset(now + cfg.ping_interval());
                if !pong_armed {
                    pong.as_mut().reset(now + cfg.pong_timeout());
                    pong_armed = true;
                }
                match tokio::time::timeout(cfg.send_timeout(), sink.send(Message::Ping(Default::default()))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return End::Dropped,
                    Err(_) => return slow(c, &mut sink).await,
                }
            }
            m = inbox.data.recv() => {
                let Some(m) = m else {
                    // The registry let go of this connection: its close order is queued.
                    if let Ok(order) = inbox.control.try_recv() {
                        send_close(&mut sink, c, order.code, order.reason).await;
                    }
                    return End::Closed;
                };
                if session {
                    last_traffic = Instant::now();
                }
                // Write what is queued (a bounded batch), then flush once.
                let write = async {
                    let mut next = Some(m);
                    let mut n = 0;
                    while let Some(m) = next.take() {
                        inbox.queued.fetch_sub(m.len(), Ordering::AcqRel);
                        sink.feed(m).await?;
                        n += 1;
                        if n < BATCH {
                            next = inbox.data.try_recv().ok();
                        }
                    }
                    sink.flush().await
                };
                match tokio::time::timeout(cfg.send_timeout(), write).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return End::Dropped,
                    Err(_) => return slow(c, &mut sink).await,
                }
            }
            m = stream.next() => {
                let m = match m {
                    Some(Ok(m)) => m,
                    Some(Err(WsError::Capacity(_))) => {
                        c.metrics.count_drop(DropReason::TooBig);
                        send_close(&mut sink, c, close::TOO_BIG, "frame or message too big").await;
                        return End::Closed;
                    }
                    Some(Err(WsError::ConnectionClosed)) => return End::Closed,
                    Some(Err(_)) | None => return End::Dropped,
                };
                match m {
                    Message::Text(_) | Message::Binary(_) => {
                        if session {
                            last_traffic = Instant::now();
                        }
                        let r = match role {
                            Role::Device => c.registry.from_device(slot, gen, m),
                            Role::Pos => c.registry.from_pos(slot, gen, m),
                        };
                        if r == Forwarded::Stale {
                            send_close(&mut sink, c, close::REPLACED, "replaced").await;
                            return End::Closed;
                        }
                    }
                    Message::Pong(_) => pong_armed = false,
                    // tungstenite answers pings itself.
                    Message::Ping(_) | Message::Frame(_) => {}
                    Message::Close(_) => {
                        // tungstenite has queued the reply; send it.
                        let _ = tokio::time::timeout(cfg.send_timeout(), sink.close()).await;
                        return End::Closed;
                    }
                }
            }
        }
    }
}

/// A write did not finish within the send timeout: the peer is a slow consumer.
async fn slow<S>(c: &Connector, sink: &mut S) -> End
where
    S: futures_util::Sink<Message> + Unpin,
{
    c.metrics.count_drop(DropReason::SlowConsumer);
    send_close(sink, c, close::POLICY, "slow consumer").await;
    End::Closed
}
