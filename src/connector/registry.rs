//! Who is connected: one `Slot` per terminal serial number (`tsn`) holding the device's live
//! connection, the POS holding its session, and, while a dropped device may still come back, its
//! grace generation and the bounded buffer of messages waiting for it.
//!
//! Every connection gets a generation number from one counter. Whatever a connection does when it
//! ends (drop, grace timer) names its generation and is ignored unless that generation still
//! owns the role: a stale timer never kills a live session (frp#5526, fixed the same way there).
//! Lock order: the map, then a slot; nothing awaits under either.

use super::error::{close, ConnectorError};
use crate::metrics::{DropReason, RelayMetrics};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// What a connection task is told to do, besides sending messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseOrder {
    pub code: u16,
    pub reason: &'static str,
}

/// The sending side of one connection: messages in order, plus a close order that overtakes them.
#[derive(Clone)]
pub struct Outbox {
    data: mpsc::UnboundedSender<Message>,
    control: mpsc::UnboundedSender<CloseOrder>,
    queued: Arc<AtomicUsize>,
    limit: usize,
}

/// The receiving side, owned by the connection task.
pub struct Inbox {
    pub data: mpsc::UnboundedReceiver<Message>,
    pub control: mpsc::UnboundedReceiver<CloseOrder>,
    pub queued: Arc<AtomicUsize>,
}

pub fn outbox(limit: usize) -> (Outbox, Inbox) {
    let (dt, dr) = mpsc::unbounded_channel();
    let (ct, cr) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        Outbox {
            data: dt,
            control: ct,
            queued: queued.clone(),
            limit,
        },
        Inbox {
            data: dr,
            control: cr,
            queued,
        },
    )
}

impl Outbox {
    /// Queue a message; false when the peer already has `limit` bytes waiting (slow consumer).
    fn push(&self, m: Message) -> bool {
        let n = m.len();
        let before = self.queued.fetch_add(n, Ordering::AcqRel);
        if before + n > self.limit && before > 0 {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        if self.data.send(m).is_err() {
            self.queued.fetch_sub(n, Ordering::AcqRel);
        }
        true
    }

    pub fn close(&self, code: u16, reason: &'static str) {
        let _ = self.control.send(CloseOrder { code, reason });
    }
}

#[derive(Clone)]
pub struct Peer {
    pub gen: u64,
    pub client: String,
    pub since_ms: i64,
    pub out: Outbox,
}

#[derive(Default)]
struct Buffer {
    msgs: VecDeque<Message>,
    bytes: usize,
}

#[derive(Default)]
pub struct SlotState {
    pub device: Option<Peer>,
    /// The generation of the dropped device connection whose grace runs now.
    pub grace: Option<u64>,
    pub grace_since_ms: i64,
    pub pos: Option<Peer>,
    to_device: Buffer,
}

impl SlotState {
    fn is_empty(&self) -> bool {
        self.device.is_none() && self.grace.is_none() && self.pos.is_none()
    }
    pub fn buffered(&self) -> (usize, usize) {
        (self.to_device.msgs.len(), self.to_device.bytes)
    }
}

pub struct Slot {
    pub tsn: String,
    state: Mutex<SlotState>,
}

impl Slot {
    pub fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// A close handshake, either side, or the server closed it on purpose (limits, replaced).
    Closed,
    /// The socket died without a close frame, or no pong came: a device gets its grace.
    Dropped,
}

/// Limits the registry applies.
#[derive(Clone, Copy)]
pub struct Bounds {
    pub buffer_messages: usize,
    pub buffer_bytes: usize,
    pub max_sessions: usize,
    pub max_devices: usize,
}

pub struct Registry {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    next_gen: AtomicU64,
    sessions: AtomicUsize,
    devices: AtomicUsize,
    bounds: Bounds,
    metrics: Arc<RelayMetrics>,
}

/// What a forward did with a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Forwarded {
    Sent,
    Buffered,
    /// Nobody to send to (a device message with no session).
    Dropped,
    /// This connection no longer owns its role (replaced): it should close.
    Stale,
}

impl Registry {
    pub fn new(bounds: Bounds, metrics: Arc<RelayMetrics>) -> Registry {
        Registry {
            slots: Mutex::new(HashMap::new()),
            next_gen: AtomicU64::new(1),
            sessions: AtomicUsize::new(0),
            devices: AtomicUsize::new(0),
            bounds,
            metrics,
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, tsn: &str) -> Option<Arc<Slot>> {
        self.map().get(tsn).cloned()
    }

    fn slot(&self, tsn: &str) -> Arc<Slot> {
        self.map()
            .entry(tsn.to_owned())
            .or_insert_with(|| {
                Arc::new(Slot {
                    tsn: tsn.to_owned(),
                    state: Mutex::default(),
                })
            })
            .clone()
    }

    /// Drop the slot from the map if nothing uses it any more.
    fn tidy(&self, slot: &Arc<Slot>) {
        let mut map = self.map();
        if let Some(s) = map.get(&slot.tsn) {
            if Arc::ptr_eq(s, slot) && slot.lock().is_empty() {
                map.remove(&slot.tsn);
            }
        }
    }

    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }
    pub fn devices(&self) -> usize {
        self.devices.load(Ordering::Relaxed)
    }

    /// All slots, for the status endpoint.
    pub fn snapshot(&self) -> Vec<Arc<Slot>> {
        let mut v: Vec<_> = self.map().values().cloned().collect();
        v.sort_by(|a, b| a.tsn.cmp(&b.tsn));
        v
    }

    /// Order every connection closed with `code` (shutdown).
    pub fn close_all(&self, code: u16, reason: &'static str) {
        for slot in self.snapshot() {
            self.close_all_in(&slot, code, reason);
        }
    }

    /// Order the connections of one slot closed.
    pub fn close_all_in(&self, slot: &Slot, code: u16, reason: &'static str) {
        let s = slot.lock();
        for p in s.device.iter().chain(s.pos.iter()) {
            p.out.close(code, reason);
        }
    }

    /// A device connection arrives. A live older connection of the same device is replaced
    /// (4001); a running grace ends, and what was buffered goes out first, in order.
    /// `on_attach` runs under the slot lock (presence is written there, in order).
    pub fn attach_device(
        &self,
        tsn: &str,
        client: &str,
        now_ms: i64,
        out: Outbox,
        on_attach: impl FnOnce(),
    ) -> Result<(u64, Arc<Slot>), ConnectorError> {
        let slot = self.slot(tsn);
        let gen = self.next_gen.fetch_add(1, Ordering::Relaxed);
        {
            let mut s = slot.lock();
            if let Some(old) = s.device.take() {
                old.out
                    .close(close::REPLACED, "replaced by a newer connection");
                self.metrics.count_drop(DropReason::Replaced);
            } else if self.devices.fetch_add(1, Ordering::AcqRel) >= self.bounds.max_devices {
                self.devices.fetch_sub(1, Ordering::AcqRel);
                drop(s);
                self.tidy(&slot);
                return Err(ConnectorError::TooManyDevices);
            } else {
                self.metrics.devices_connected(1);
            }
            s.grace = None;
            let buffered = std::mem::take(&mut s.to_device);
            for m in buffered.msgs {
                out.push(m);
            }
            s.device = Some(Peer {
                gen,
                client: client.to_owned(),
                since_ms: now_ms,
                out,
            });
            on_attach();
        }
        Ok((gen, slot))
    }

    /// A POS connection arrives with a session JWT. Busy unless `takeover` by the same client.
    pub fn attach_pos(
        &self,
        tsn: &str,
        client: &str,
        takeover: bool,
        now_ms: i64,
        out: Outbox,
    ) -> Result<(u64, Arc<Slot>), ConnectorError> {
        let slot = self.get(tsn).ok_or(ConnectorError::DeviceOffline)?;
        let gen = self.next_gen.fetch_add(1, Ordering::Relaxed);
        let mut s = slot.lock();
        if s.device.is_none() && s.grace.is_none() {
            return Err(ConnectorError::DeviceOffline);
        }
        match &s.pos {
            Some(old) if takeover && old.client == client => {
                old.out.close(close::REPLACED, "session taken over");
                self.metrics.count_drop(DropReason::Replaced);
            }
            Some(_) => return Err(ConnectorError::SessionBusy),
            None => {
                if self.sessions.fetch_add(1, Ordering::AcqRel) >= self.bounds.max_sessions {
                    self.sessions.fetch_sub(1, Ordering::AcqRel);
                    return Err(ConnectorError::TooManySessions);
                }
                self.metrics.sessions_active(1);
            }
        }
        s.pos = Some(Peer {
            gen,
            client: client.to_owned(),
            since_ms: now_ms,
            out,
        });
        drop(s);
        Ok((gen, slot))
    }

    /// Whether a claim for `tsn` would find a device and a free session now (the POS's
    /// connection checks again).
    pub fn check_claim(&self, tsn: &str, client: &str, takeover: bool) -> Option<ConnectorError> {
        let slot = self.get(tsn)?;
        let s = slot.lock();
        if s.device.is_none() && s.grace.is_none() {
            return Some(ConnectorError::DeviceOffline);
        }
        match &s.pos {
            Some(p) if !(takeover && p.client == client) => Some(ConnectorError::SessionBusy),
            _ => None,
        }
    }

    /// A message from the device `gen` to the POS holding the session.
    pub fn from_device(&self, slot: &Slot, gen: u64, m: Message) -> Forwarded {
        let s = slot.lock();
        if s.device.as_ref().map(|p| p.gen) != Some(gen) {
            return Forwarded::Stale;
        }
        let n = m.len();
        match &s.pos {
            Some(pos) => {
                if pos.out.push(m) {
                    self.metrics.relayed(false, n);
                    Forwarded::Sent
                } else {
                    pos.out.close(close::POLICY, "slow consumer");
                    self.metrics.count_drop(DropReason::SlowConsumer);
                    Forwarded::Dropped
                }
            }
            None => {
                self.metrics.count_drop(DropReason::NoSession);
                Forwarded::Dropped
            }
        }
    }

    /// A message from the POS `gen` to the device, or into the grace buffer while it is away.
    pub fn from_pos(&self, slot: &Slot, gen: u64, m: Message) -> Forwarded {
        let mut s = slot.lock();
        if s.pos.as_ref().map(|p| p.gen) != Some(gen) {
            return Forwarded::Stale;
        }
        let n = m.len();
        if let Some(dev) = &s.device {
            if dev.out.push(m) {
                self.metrics.relayed(true, n);
                return Forwarded::Sent;
            }
            dev.out.close(close::POLICY, "slow consumer");
            self.metrics.count_drop(DropReason::SlowConsumer);
            return Forwarded::Dropped;
        }
        let b = &s.to_device;
        if b.msgs.len() >= self.bounds.buffer_messages || b.bytes + n > self.bounds.buffer_bytes {
            // The device is away and the buffer is full: the POS had better fall back now.
            if let Some(pos) = &s.pos {
                pos.out
                    .close(close::DEVICE_GONE, "device away and its buffer is full");
            }
            self.metrics.count_drop(DropReason::BufferFull);
            return Forwarded::Dropped;
        }
        s.to_device.bytes += n;
        s.to_device.msgs.push_back(m);
        self.metrics.relayed(true, n);
        Forwarded::Buffered
    }

    /// The device connection `gen` ended. Dropped: the grace starts (the caller arms the timer
    /// and calls `grace_expired` with the same generation). Closed: the POS gets 4002 now.
    /// Returns whether a grace started. `on_offline` runs under the slot lock when the device
    /// is gone for good.
    pub fn detach_device(
        &self,
        slot: &Arc<Slot>,
        gen: u64,
        end: End,
        now_ms: i64,
        unsent: &mut Inbox,
        on_offline: impl FnOnce(),
    ) -> bool {
        let grace = {
            let mut s = slot.lock();
            if s.device.as_ref().map(|p| p.gen) != Some(gen) {
                return false; // replaced meanwhile: the newer connection owns the slot
            }
            s.device = None;
            self.devices.fetch_sub(1, Ordering::AcqRel);
            self.metrics.devices_connected(-1);
            if end == End::Dropped && s.pos.is_some() {
                s.grace = Some(gen);
                s.grace_since_ms = now_ms;
                // What was queued for the dead connection and never written waits for the
                // next one, first (under this lock nothing else can be buffered before it).
                let mut full = false;
                while let Ok(m) = unsent.data.try_recv() {
                    let b = &mut s.to_device;
                    if b.msgs.len() >= self.bounds.buffer_messages
                        || b.bytes + m.len() > self.bounds.buffer_bytes
                    {
                        full = true;
                        break;
                    }
                    b.bytes += m.len();
                    b.msgs.push_back(m);
                }
                if full {
                    self.metrics.count_drop(DropReason::BufferFull);
                    if let Some(pos) = &s.pos {
                        pos.out
                            .close(close::DEVICE_GONE, "device away and its buffer is full");
                    }
                }
                true
            } else {
                self.end_session(&mut s, close::DEVICE_GONE, "device closed");
                on_offline();
                false
            }
        };
        if !grace {
            self.tidy(slot);
        }
        grace
    }

    /// The grace of device connection `gen` is over. Does nothing if the device came back (or
    /// a newer connection dropped since, with its own timer). Returns whether it acted.
    pub fn grace_expired(&self, slot: &Arc<Slot>, gen: u64, on_offline: impl FnOnce()) -> bool {
        {
            let mut s = slot.lock();
            if s.grace != Some(gen) || s.device.is_some() {
                return false;
            }
            s.grace = None;
            self.metrics.count_drop(DropReason::GraceExpired);
            self.end_session(
                &mut s,
                close::DEVICE_GONE,
                "device did not come back in time",
            );
            on_offline();
        }
        self.tidy(slot);
        true
    }

    /// The POS connection `gen` ended: its session is over (the buffer with it).
    pub fn detach_pos(&self, slot: &Arc<Slot>, gen: u64) {
        {
            let mut s = slot.lock();
            if s.pos.as_ref().map(|p| p.gen) != Some(gen) {
                return;
            }
            s.pos = None;
            self.sessions.fetch_sub(1, Ordering::AcqRel);
            self.metrics.sessions_active(-1);
            s.to_device = Buffer::default();
            // A device still away has nobody waiting for it now.
            s.grace = None;
        }
        self.tidy(slot);
    }

    /// Close the POS with `code` and forget the session and the buffer.
    fn end_session(&self, s: &mut SlotState, code: u16, reason: &'static str) {
        if let Some(pos) = s.pos.take() {
            pos.out.close(code, reason);
            self.sessions.fetch_sub(1, Ordering::AcqRel);
            self.metrics.sessions_active(-1);
        }
        s.to_device = Buffer::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> Registry {
        Registry::new(
            Bounds {
                buffer_messages: 3,
                buffer_bytes: 100,
                max_sessions: 10,
                max_devices: 10,
            },
            Arc::default(),
        )
    }

    fn text(s: &str) -> Message {
        Message::text(s.to_owned())
    }

    fn drain(i: &mut Inbox) -> Vec<String> {
        let mut v = vec![];
        while let Ok(m) = i.data.try_recv() {
            v.push(m.into_text().unwrap().as_str().to_owned());
        }
        v
    }

    #[test]
    fn a_stale_grace_timer_does_not_end_the_live_session() {
        // frp#5526: device gen 1 drops, comes back as gen 2, drops again (gen 3 comes back);
        // the first drop's timer fires late and must do nothing.
        let r = reg();
        let (d1, mut i1) = outbox(1000);
        let (g1, slot) = r.attach_device("T", "dev", 0, d1, || {}).unwrap();
        let (p, mut pi) = outbox(1000);
        let (pg, _) = r.attach_pos("T", "pos", false, 0, p).unwrap();
        assert!(r.detach_device(&slot, g1, End::Dropped, 0, &mut i1, || {}));
        let (d2, mut i2) = outbox(1000);
        let (g2, _) = r.attach_device("T", "dev", 0, d2, || {}).unwrap();
        assert!(!r.grace_expired(&slot, g1, || panic!("stale timer went offline")));
        assert!(r.detach_device(&slot, g2, End::Dropped, 0, &mut i2, || {}));
        let (d3, mut i3) = outbox(1000);
        r.attach_device("T", "dev", 0, d3, || {}).unwrap();
        assert!(!r.grace_expired(&slot, g1, || {}));
        assert!(!r.grace_expired(&slot, g2, || {}));
        assert_eq!(r.from_pos(&slot, pg, text("still here")), Forwarded::Sent);
        assert_eq!(drain(&mut i3), ["still here"]);
        assert!(pi.control.try_recv().is_err(), "the POS was not closed");
        assert_eq!(r.sessions(), 1);
    }

    #[test]
    fn messages_buffered_in_the_grace_are_flushed_in_order_before_new_ones() {
        let r = reg();
        let (d1, mut i1) = outbox(1000);
        let (g1, slot) = r.attach_device("T", "dev", 0, d1, || {}).unwrap();
        let (p, _pi) = outbox(1000);
        let (pg, _) = r.attach_pos("T", "pos", false, 0, p).unwrap();
        // "a" was queued for the connection that died and never written: it goes first.
        assert_eq!(r.from_pos(&slot, pg, text("a")), Forwarded::Sent);
        r.detach_device(&slot, g1, End::Dropped, 0, &mut i1, || {});
        for m in ["b", "c"] {
            assert_eq!(r.from_pos(&slot, pg, text(m)), Forwarded::Buffered);
        }
        let (d2, mut i2) = outbox(1000);
        r.attach_device("T", "dev", 0, d2, || {}).unwrap();
        assert_eq!(r.from_pos(&slot, pg, text("d")), Forwarded::Sent);
        assert_eq!(drain(&mut i2), ["a", "b", "c", "d"]);
    }

    #[test]
    fn a_full_buffer_and_an_expired_grace_close_the_pos_with_4002() {
        let r = reg();
        let (d1, mut i1) = outbox(1000);
        let (g1, slot) = r.attach_device("T", "dev", 0, d1, || {}).unwrap();
        let (p, mut pi) = outbox(1000);
        let (pg, _) = r.attach_pos("T", "pos", false, 0, p).unwrap();
        r.detach_device(&slot, g1, End::Dropped, 0, &mut i1, || {});
        for _ in 0..3 {
            r.from_pos(&slot, pg, text("x"));
        }
        assert_eq!(
            r.from_pos(&slot, pg, text("one too many")),
            Forwarded::Dropped
        );
        assert_eq!(pi.control.try_recv().unwrap().code, close::DEVICE_GONE);
        let mut offline = false;
        assert!(r.grace_expired(&slot, g1, || offline = true));
        assert!(offline);
        assert_eq!(pi.control.try_recv().unwrap().code, close::DEVICE_GONE);
        assert_eq!(r.sessions(), 0);
        assert!(r.get("T").is_none(), "an empty slot is forgotten");
    }

    #[test]
    fn a_second_claim_is_busy_and_a_takeover_by_the_same_client_replaces_with_4001() {
        let r = reg();
        let (d, _) = outbox(1000);
        r.attach_device("T", "dev", 0, d, || {}).unwrap();
        let (p1, mut i1) = outbox(1000);
        r.attach_pos("T", "pos", false, 0, p1).unwrap();
        let (p2, _) = outbox(1000);
        assert!(matches!(
            r.attach_pos("T", "other", true, 0, p2.clone()),
            Err(ConnectorError::SessionBusy)
        ));
        assert!(matches!(
            r.attach_pos("T", "pos", false, 0, p2.clone()),
            Err(ConnectorError::SessionBusy)
        ));
        r.attach_pos("T", "pos", true, 0, p2).unwrap();
        assert_eq!(i1.control.try_recv().unwrap().code, close::REPLACED);
        assert_eq!(r.sessions(), 1);
        let (p3, _) = outbox(1000);
        assert!(matches!(
            r.attach_pos("U", "pos", false, 0, p3),
            Err(ConnectorError::DeviceOffline)
        ));
    }

    #[test]
    fn a_consumer_past_its_queue_limit_is_closed_with_1008() {
        let r = reg();
        let (d, mut di) = outbox(10);
        r.attach_device("T", "dev", 0, d, || {}).unwrap();
        let (p, _) = outbox(1000);
        let (pg, slot) = r.attach_pos("T", "pos", false, 0, p).unwrap();
        assert_eq!(r.from_pos(&slot, pg, text("123456")), Forwarded::Sent);
        assert_eq!(r.from_pos(&slot, pg, text("123456")), Forwarded::Dropped);
        assert_eq!(di.control.try_recv().unwrap().code, close::POLICY);
    }
}
