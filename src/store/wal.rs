//! The write-ahead log in front of sled's hot trees (issue 9): terminal records and the
//! sandbox's transactions. A write to those trees is applied to sled and appended to an
//! in-memory buffer under one lock, so the log holds each key's writes in the order sled
//! applied them. A durable flush writes the buffer to the current segment and fdatasyncs it:
//! one pwrite and one fdatasync per group commit, instead of sled's flush (its I/O pool's
//! wake-ups, `sync_file_range`) and then an fdatasync of sled's file.
//!
//! sled still writes its own log lazily (its buffers and its flusher). A checkpoint, when
//! the segment has grown past `store.wal_checkpoint_mb`, starts a new segment, flushes and
//! fdatasyncs sled, and deletes the segments before the new one: everything in them is then
//! in sled's durable state. At open, the segments left are replayed into sled in order,
//! sled is flushed, and they are deleted.
//!
//! Every record is a blind write (the key's new bytes, or its removal), so replaying a segment
//! over a sled state that already holds some of it gives each key its last logged value.
//! Segment: `SGWAL001`, then records `[u32 LE length][u32 LE crc32][ops]`, each op
//! `[u8 kind][u8 tree][u32 LE key length][u32 LE value length][key][value]`, then zeros. A
//! length of 0 ends the segment. A record that is short or fails its CRC with bytes other
//! than zeros after it was torn by a crash while it was being written, and nobody was answered
//! for it: it ends the newest segment, and is damage anywhere else.
//!
//! Segments are filled with zeros ahead of the writes (`ZERO_AHEAD`), off the answer path:
//! fdatasync of a write into blocks already written only writes the data, while a write that
//! grows the file also commits the file system's journal (106 against 63 µs median on this
//! machine's disk, docs/BENCHMARKS.md).

use super::StoreError;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

const MAGIC: &[u8; 8] = b"SGWAL001";
const RECORD_HEADER: usize = 8;
const OP_HEADER: usize = 10;
const PUT: u8 = 1;
const DEL: u8 = 2;

/// How far ahead of the writes a segment is filled with zeros; refilled when less than half
/// is left (`Wal::prepare`, after a flush's answers).
const ZERO_AHEAD: u64 = 512 * 1024;

/// A writer that leaves this much buffered (a bulk load that never asks for a flush) writes it
/// to the segment itself, without an fdatasync, and checkpoints if due: the buffer and the
/// segment stay bounded whoever writes.
const SPILL_BYTES: usize = 1024 * 1024;

/// Makes everything applied to sled so far durable there (sled's flush, then fdatasync).
pub(super) type Settle = Box<dyn Fn() -> Result<(), StoreError> + Send + Sync>;

/// The trees the log covers. Every write to them goes through `Wal::write`; a write that did
/// not would be overwritten by an older logged value at the next replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tree {
    Terminals = 1,
    Transactions = 2,
    TerminalTransactions = 3,
}

impl Tree {
    fn from_u8(b: u8) -> Option<Tree> {
        match b {
            1 => Some(Tree::Terminals),
            2 => Some(Tree::Transactions),
            3 => Some(Tree::TerminalTransactions),
            _ => None,
        }
    }
}

/// What the log's writers share: the buffer of records not yet written.
struct State {
    buf: Vec<u8>,
    seq: u64,
    /// Bytes in the current segment, buffered ones included.
    bytes: u64,
}

/// The current segment, held by whoever writes to it.
struct Segment {
    file: File,
    /// Bytes written (the next write's offset).
    end: u64,
    /// Bytes filled with zeros (or written) so far.
    zeroed: u64,
}

/// The segment writer's side: the segment and a spare buffer to swap with `State::buf`.
struct Io {
    seg: Segment,
    spare: Vec<u8>,
}

pub(super) struct Wal {
    dir: PathBuf,
    state: Mutex<State>,
    /// One writer of segment files at a time (the flush, a checkpoint's rotation, the zero
    /// fill), so buffers reach a segment in the order they were taken.
    io: Mutex<Io>,
    checkpointing: Mutex<()>,
    checkpoint_bytes: u64,
    settle: Settle,
    fdatasyncs: AtomicU64,
    checkpoints: AtomicU64,
    /// A write or fdatasync of a segment failed: what reached the file is unknown, and a record
    /// appended after a torn one would never be replayed. No flush succeeds after that; the
    /// process must restart (and replay) before anything is acknowledged again.
    failed: AtomicBool,
}

/// The ops of one record, appended by the caller of `Wal::write` as it applies them to sled.
pub(super) struct Ops<'a> {
    buf: Option<&'a mut Vec<u8>>,
}

impl Ops<'_> {
    /// No log (a store opened without one): the ops are dropped.
    pub(super) fn none() -> Ops<'static> {
        Ops { buf: None }
    }

    pub(super) fn put(&mut self, tree: Tree, key: &[u8], value: &[u8]) {
        self.op(PUT, tree, key, value);
    }

    pub(super) fn del(&mut self, tree: Tree, key: &[u8]) {
        self.op(DEL, tree, key, &[]);
    }

    fn op(&mut self, kind: u8, tree: Tree, key: &[u8], value: &[u8]) {
        let Some(buf) = self.buf.as_deref_mut() else {
            return;
        };
        buf.push(kind);
        buf.push(tree as u8);
        buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
        buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
        buf.extend_from_slice(key);
        buf.extend_from_slice(value);
    }
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Engine(sled::Error::Io(e))
}

fn segment_name(seq: u64) -> String {
    format!("{seq:020}.wal")
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

/// The segments in `dir`, oldest first.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io)? {
        let e = e.map_err(io)?;
        let name = e.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((seq, e.path()));
    }
    out.sort();
    Ok(out)
}

/// A new, empty segment, filled with zeros `ZERO_AHEAD` deep, on disk with its directory
/// entry before anything relies on it.
fn create_segment(dir: &Path, seq: u64) -> Result<Segment, StoreError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(dir.join(segment_name(seq)))
        .map_err(io)?;
    let mut seg = Segment {
        file,
        end: MAGIC.len() as u64,
        zeroed: MAGIC.len() as u64,
    };
    seg.file.write_all_at(MAGIC, 0).map_err(io)?;
    seg.zero_fill()?;
    sync_dir(dir)?;
    Ok(seg)
}

impl Segment {
    /// Fill `ZERO_AHEAD` more bytes with zeros and make them durable.
    fn zero_fill(&mut self) -> Result<(), StoreError> {
        const CHUNK: usize = 64 * 1024;
        let zeros = [0u8; CHUNK];
        let mut at = self.zeroed.max(self.end);
        let to = at + ZERO_AHEAD;
        while at < to {
            self.file.write_all_at(&zeros, at).map_err(io)?;
            at += CHUNK as u64;
        }
        self.file.sync_data().map_err(io)?;
        self.zeroed = to;
        Ok(())
    }

    /// Append `bytes`.
    fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.file.write_all_at(bytes, self.end).map_err(io)?;
        self.end += bytes.len() as u64;
        Ok(())
    }

    /// Append `bytes` and fdatasync.
    fn write_and_sync(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.write(bytes)?;
        self.file.sync_data().map_err(io)
    }
}

/// What replaying one segment found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Replayed {
    pub(super) records: u64,
    /// Bytes after the last whole record (a torn tail), not applied.
    pub(super) torn: u64,
}

/// What a replay does with each op: put (`Some` value) or remove `key` in the tree.
type Apply<'a> = dyn FnMut(Tree, &[u8], Option<&[u8]>) -> Result<(), StoreError> + 'a;

/// Apply every whole record of `bytes` (a segment) in order.
fn replay_segment(bytes: &[u8], apply: &mut Apply<'_>) -> Result<Replayed, StoreError> {
    let mut out = Replayed::default();
    if bytes.len() < MAGIC.len() {
        // Torn while being created: nothing was ever written to it.
        out.torn = bytes.len() as u64;
        return Ok(out);
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(StoreError::Wal(
            "a write-ahead log segment has an unknown header".into(),
        ));
    }
    let mut at = MAGIC.len();
    while at < bytes.len() {
        let Some(payload) = whole_record(&bytes[at..]) else {
            // Zeros to the end: the segment's clean end. Anything else: a torn record.
            if bytes[at..].iter().any(|&b| b != 0) {
                out.torn = (bytes.len() - at) as u64;
            }
            break;
        };
        // Checked before applying any of it: a record is applied whole or not at all.
        let ops = parse_ops(payload)?;
        for (tree, key, value) in ops {
            apply(tree, key, value)?;
        }
        out.records += 1;
        at += RECORD_HEADER + payload.len();
    }
    Ok(out)
}

/// The payload of the record at the start of `b`, if it is whole and its CRC matches.
fn whole_record(b: &[u8]) -> Option<&[u8]> {
    let len = u32::from_le_bytes(b.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(b.get(4..8)?.try_into().ok()?);
    let payload = b.get(RECORD_HEADER..RECORD_HEADER.checked_add(len)?)?;
    (len > 0 && crc32fast::hash(payload) == crc).then_some(payload)
}

type Op<'a> = (Tree, &'a [u8], Option<&'a [u8]>);

/// A record whose CRC matched but whose ops do not parse was written by another format:
/// an error, not a torn tail.
fn parse_ops(mut p: &[u8]) -> Result<Vec<Op<'_>>, StoreError> {
    let bad = || StoreError::Wal("a write-ahead log record does not parse".into());
    let mut ops = Vec::new();
    while !p.is_empty() {
        let h = p.get(..OP_HEADER).ok_or_else(bad)?;
        let tree = Tree::from_u8(h[1]).ok_or_else(bad)?;
        let klen = u32::from_le_bytes([h[2], h[3], h[4], h[5]]) as usize;
        let vlen = u32::from_le_bytes([h[6], h[7], h[8], h[9]]) as usize;
        let end = OP_HEADER + klen + vlen;
        let body = p.get(OP_HEADER..end).ok_or_else(bad)?;
        let (key, value) = body.split_at(klen);
        let value = match h[0] {
            PUT => Some(value),
            DEL if vlen == 0 => None,
            _ => return Err(bad()),
        };
        ops.push((tree, key, value));
        p = &p[end..];
    }
    Ok(ops)
}

impl Wal {
    /// Open the log in `dir`: replay what an earlier process left (`replay`), then start a
    /// new segment. `settle` is kept for checkpoints.
    pub(super) fn open(
        dir: &Path,
        checkpoint_bytes: u64,
        apply: impl FnMut(Tree, &[u8], Option<&[u8]>) -> Result<(), StoreError>,
        settle: Settle,
    ) -> Result<Wal, StoreError> {
        let last = Self::replay(dir, apply, &settle)?;
        let seq = last + 1;
        let seg = create_segment(dir, seq)?;
        Ok(Wal {
            dir: dir.to_owned(),
            state: Mutex::new(State {
                buf: Vec::with_capacity(64 * 1024),
                seq,
                bytes: MAGIC.len() as u64,
            }),
            io: Mutex::new(Io {
                seg,
                spare: Vec::with_capacity(64 * 1024),
            }),
            checkpointing: Mutex::new(()),
            checkpoint_bytes,
            settle,
            fdatasyncs: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            failed: AtomicBool::new(false),
        })
    }

    /// Replay the segments in `dir` into sled in order (`apply`), make them durable there
    /// (`settle`: sled's flush and fdatasync) and delete them. The last segment's number, or 0.
    /// A crash during a replay leaves the segments in place; the next open replays them again.
    pub(super) fn replay(
        dir: &Path,
        mut apply: impl FnMut(Tree, &[u8], Option<&[u8]>) -> Result<(), StoreError>,
        settle: &dyn Fn() -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        std::fs::create_dir_all(dir).map_err(io)?;
        let old = segments(dir)?;
        let last = old.last().map_or(0, |(seq, _)| *seq);
        for (i, (_, path)) in old.iter().enumerate() {
            let mut bytes = Vec::new();
            File::open(path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(io)?;
            let r = replay_segment(&bytes, &mut apply)?;
            if r.torn > 0 && i + 1 < old.len() {
                // Only the newest segment can be torn: a rotation syncs the old one first.
                return Err(StoreError::Wal(format!(
                    "segment {} is damaged {} bytes before its end",
                    path.display(),
                    r.torn
                )));
            }
            if r.torn > 0 {
                tracing::warn!(
                    segment = %path.display(),
                    records = r.records,
                    torn_bytes = r.torn,
                    "write-ahead log ends in a torn record (a crash during a write); it was never acknowledged"
                );
            }
        }
        if !old.is_empty() {
            settle()?;
            for (_, path) in &old {
                std::fs::remove_file(path).map_err(io)?;
            }
            sync_dir(dir)?;
        }
        Ok(last)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f`, which applies writes to sled and names each in `Ops`, under the log's lock:
    /// the ops become one record, replayed whole or not at all. Whatever `f` returns, the ops
    /// it named happened in sled and are logged.
    pub(super) fn write<R>(
        &self,
        f: impl FnOnce(&mut Ops<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut st = self.state();
        let start = st.buf.len();
        st.buf.extend_from_slice(&[0; RECORD_HEADER]);
        let r = f(&mut Ops {
            buf: Some(&mut st.buf),
        });
        let len = st.buf.len() - start - RECORD_HEADER;
        if len == 0 {
            st.buf.truncate(start);
        } else {
            let crc = crc32fast::hash(&st.buf[start + RECORD_HEADER..]);
            st.buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
            st.buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
            st.bytes += (RECORD_HEADER + len) as u64;
        }
        let spill = st.buf.len() >= SPILL_BYTES;
        drop(st);
        if spill {
            // The write itself is done and its result stands; a failure here fails every
            // later flush (`failed`), so nothing written since is ever acknowledged.
            if let Err(e) = self.spill() {
                tracing::error!(error = %e, "write-ahead log: writing a full buffer failed");
            }
        }
        r
    }

    /// Write the buffer to the segment without an fdatasync, then checkpoint if due.
    fn spill(&self) -> Result<(), StoreError> {
        self.write_out(false)?;
        match self.checkpoint_due() {
            true => self.checkpoint(),
            false => Ok(()),
        }
    }

    /// Write what is buffered to the current segment and fdatasync it: every write logged
    /// before this call is then durable.
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        self.write_out(true)?;
        self.fdatasyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Take the buffer and write it to the current segment; with `sync`, fdatasync it. Once
    /// the log has failed the buffer is dropped instead: nothing is acknowledged any more, and
    /// the memory stays bounded.
    fn write_out(&self, sync: bool) -> Result<(), StoreError> {
        let mut io = self.io();
        let io = &mut *io;
        std::mem::swap(&mut self.state().buf, &mut io.spare);
        let r = self.check().and_then(|()| match sync {
            true => io.seg.write_and_sync(&io.spare),
            false => io.seg.write(&io.spare),
        });
        io.spare.clear();
        self.note(r)
    }

    fn io(&self) -> MutexGuard<'_, Io> {
        self.io.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keep the segment filled with zeros ahead of its writes (see the module text). Run after
    /// a flush has answered, so the fill delays only a later flush, once per `ZERO_AHEAD / 2`.
    pub(super) fn prepare(&self) -> Result<(), StoreError> {
        let mut io = self.io();
        if io.seg.zeroed.saturating_sub(io.seg.end) >= ZERO_AHEAD / 2 {
            return Ok(());
        }
        self.check()?;
        let r = io.seg.zero_fill();
        self.note(r)
    }

    fn check(&self) -> Result<(), StoreError> {
        match self.failed.load(Ordering::Acquire) {
            true => Err(StoreError::Wal(
                "the write-ahead log failed to write earlier; restart to replay it".into(),
            )),
            false => Ok(()),
        }
    }

    fn note(&self, r: Result<(), StoreError>) -> Result<(), StoreError> {
        if r.is_err() {
            self.failed.store(true, Ordering::Release);
        }
        r
    }

    pub(super) fn checkpoint_due(&self) -> bool {
        self.state().bytes >= self.checkpoint_bytes
    }

    /// Start a new segment, make sled durable (`settle`), and delete the older segments:
    /// they hold nothing sled's durable state lacks. One checkpoint at a time.
    pub(super) fn checkpoint(&self) -> Result<(), StoreError> {
        let _one = self.checkpointing.lock().unwrap_or_else(|p| p.into_inner());
        self.check()?;
        let next = self.state().seq + 1;
        let new = create_segment(&self.dir, next)?;
        {
            let mut io = self.io();
            let io = &mut *io;
            {
                let mut st = self.state();
                std::mem::swap(&mut st.buf, &mut io.spare);
                st.seq = next;
                st.bytes = MAGIC.len() as u64;
            }
            let mut old = std::mem::replace(&mut io.seg, new);
            // The old segment whole on disk before the io lock lets a flush sync only the new
            // one: what was logged before the switch is durable by the time anyone asks.
            let r = old.write_and_sync(&io.spare);
            io.spare.clear();
            self.note(r)?;
        }
        // Everything in the old segments was applied to sled before the switch.
        (self.settle)()?;
        for (seq, path) in segments(&self.dir)? {
            if seq < next {
                std::fs::remove_file(path).map_err(io)?;
            }
        }
        sync_dir(&self.dir)?;
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub(super) fn fdatasyncs(&self) -> u64 {
        self.fdatasyncs.load(Ordering::Relaxed)
    }

    pub(super) fn checkpoints(&self) -> u64 {
        self.checkpoints.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Applied = Vec<(Tree, Vec<u8>, Option<Vec<u8>>)>;

    fn collect(bytes: &[u8]) -> (Applied, Replayed) {
        let mut got = Vec::new();
        let r = replay_segment(bytes, &mut |t, k, v| {
            got.push((t, k.to_vec(), v.map(<[u8]>::to_vec)));
            Ok(())
        })
        .unwrap();
        (got, r)
    }

    fn segment_with(records: &[&[Op<'_>]]) -> Vec<u8> {
        let mut seg = MAGIC.to_vec();
        for rec in records {
            let mut payload = Vec::new();
            let mut ops = Ops {
                buf: Some(&mut payload),
            };
            for (t, k, v) in rec.iter() {
                match v {
                    Some(v) => ops.put(*t, k, v),
                    None => ops.del(*t, k),
                }
            }
            seg.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            seg.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            seg.extend_from_slice(&payload);
        }
        seg
    }

    #[test]
    fn records_replay_in_order_and_a_torn_tail_is_left_out_whole() {
        let seg = segment_with(&[
            &[(Tree::Terminals, b"t1", Some(b"v1"))],
            &[
                (Tree::Transactions, b"x1", Some(b"sale")),
                (Tree::TerminalTransactions, b"t1x1", Some(b"")),
            ],
            &[(Tree::Transactions, b"x1", None)],
        ]);
        let (got, r) = collect(&seg);
        assert_eq!(
            r,
            Replayed {
                records: 3,
                torn: 0
            }
        );
        assert_eq!(got.len(), 4);
        assert_eq!(
            got[2],
            (Tree::TerminalTransactions, b"t1x1".to_vec(), Some(vec![]))
        );
        assert_eq!(got[3], (Tree::Transactions, b"x1".to_vec(), None));

        // Every cut inside the last record drops that record, and only it.
        let two = segment_with(&[
            &[(Tree::Terminals, b"t1", Some(b"v1"))],
            &[
                (Tree::Transactions, b"x1", Some(b"sale")),
                (Tree::TerminalTransactions, b"t1x1", Some(b"")),
            ],
        ]);
        let first_end = segment_with(&[&[(Tree::Terminals, b"t1", Some(b"v1"))]]).len();
        for cut in first_end..two.len() {
            let (got, r) = collect(&two[..cut]);
            assert_eq!(got.len(), 1, "cut at {cut}");
            assert_eq!(r.records, 1);
            assert_eq!(r.torn, (cut - first_end) as u64);
        }
        // A flipped bit in the last record: the same.
        let mut flipped = two.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let (got, r) = collect(&flipped);
        assert_eq!((got.len(), r.records), (1, 1));
    }

    #[test]
    fn a_foreign_header_or_op_is_an_error_not_a_torn_tail() {
        let mut seg = segment_with(&[&[(Tree::Terminals, b"k", Some(b"v"))]]);
        seg[0] = b'X';
        let mut none = |_: Tree, _: &[u8], _: Option<&[u8]>| Ok(());
        assert!(replay_segment(&seg, &mut none).is_err());
        // A CRC-valid record with an unknown tree.
        let mut seg = MAGIC.to_vec();
        let payload = [PUT, 9, 1, 0, 0, 0, 0, 0, 0, 0, b'k'];
        seg.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        seg.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        seg.extend_from_slice(&payload);
        assert!(replay_segment(&seg, &mut none).is_err());
        // Zeros after the records: the clean end of a segment filled ahead.
        let mut seg = segment_with(&[&[(Tree::Terminals, b"k", Some(b"v"))]]);
        seg.extend_from_slice(&[0; 100]);
        let r = replay_segment(&seg, &mut none).unwrap();
        assert_eq!(
            r,
            Replayed {
                records: 1,
                torn: 0
            }
        );
        // Torn while being created.
        assert_eq!(
            replay_segment(&MAGIC[..3], &mut none).unwrap(),
            Replayed {
                records: 0,
                torn: 3
            }
        );
    }
}
