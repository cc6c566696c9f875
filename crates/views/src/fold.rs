//! `FileFold`: a replay from nothing writes the blob view's rows once each, in key order (ADR 0031).
//!
//! While the log is read, every change to a blob's row (its ingestion, a reference gained or lost, its removal) is
//! kept as a record instead of being written. At the end the records are sorted by blob, each blob's records are
//! folded in log order into its final row, and the rows go into the empty table in key order, so every insert lands
//! at the end of the B-tree. Records past a memory budget are sorted and spilled to temporary files, then merged.
//!
//! The fold gives the row `Op::execute` one by one would leave: the property test of replay against the live views
//! checks it on every run.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};

use artifactstore_db::Tx;
use uuid::Uuid;

use crate::rows::{history_entry, insert_rows, FileRow};
use crate::Error;

/// Bytes of records held in memory before they are sorted and spilled.
const SPILL_AT: usize = 64 * 1024 * 1024;
/// Rows per round of inserts at the end.
const ROWS_PER_ROUND: usize = 4_000;

/// One change to one blob's row.
#[derive(Debug, Clone, PartialEq)]
enum Change {
    Ingest {
        sha256: String,
        size: i64,
        media_type: Option<String>,
        file_id: Uuid,
        at_ms: i64,
    },
    /// References gained or lost; a loss that leaves none makes the blob idle from `idle_at_ms`.
    Refs {
        delta: i64,
        idle_at_ms: Option<i64>,
    },
    Remove,
}

#[derive(Debug, Clone, PartialEq)]
struct Record {
    blake3: String,
    /// The record's place in the log's order (records of one event keep the order they were made in).
    n: u64,
    seq: i64,
    change: Change,
}

impl Record {
    fn bytes(&self) -> usize {
        let strings = match &self.change {
            Change::Ingest { sha256, media_type, .. } => sha256.len() + media_type.as_ref().map_or(0, String::len),
            _ => 0,
        };
        std::mem::size_of::<Record>() + self.blake3.len() + strings
    }

    fn key(&self) -> (&str, u64) {
        (&self.blake3, self.n)
    }
}

/// The blob rows of a replay from nothing, gathered as records and written at the end.
#[derive(Debug)]
pub(crate) struct FileFold {
    records: Vec<Record>,
    bytes: usize,
    spill_at: usize,
    next: u64,
    runs: Vec<File>,
}

impl Default for FileFold {
    fn default() -> FileFold {
        FileFold { records: Vec::new(), bytes: 0, spill_at: SPILL_AT, next: 0, runs: Vec::new() }
    }
}

impl FileFold {
    fn push(&mut self, blake3: &str, seq: i64, change: Change) -> Result<(), Error> {
        let record = Record { blake3: blake3.to_owned(), n: self.next, seq, change };
        self.next += 1;
        self.bytes += record.bytes();
        self.records.push(record);
        if self.bytes >= self.spill_at {
            self.spill()?;
        }
        Ok(())
    }

    /// A blob's ingestion, from its planned row.
    pub(crate) fn ingest(&mut self, row: FileRow) -> Result<(), Error> {
        let FileRow { blake3, sha256, size, media_type, file_id, ingested_sequence, idle_since_ms, .. } = row;
        let change = Change::Ingest { sha256, size, media_type, file_id, at_ms: idle_since_ms };
        self.push(&blake3, ingested_sequence, change)
    }

    /// References gained (`delta` > 0) or lost at event `seq`; lost at `at_ms`, the blob is idle from then if none
    /// are left.
    pub(crate) fn refs(&mut self, blake3: &str, seq: i64, delta: i64, idle_at_ms: Option<i64>) -> Result<(), Error> {
        self.push(blake3, seq, Change::Refs { delta, idle_at_ms })
    }

    /// A blob's removal by event `seq`.
    pub(crate) fn remove(&mut self, blake3: &str, seq: i64) -> Result<(), Error> {
        self.push(blake3, seq, Change::Remove)
    }

    /// Sorts the records held in memory and writes them to a temporary file.
    fn spill(&mut self) -> Result<(), Error> {
        let mut records = std::mem::take(&mut self.records);
        self.bytes = 0;
        records.sort_unstable_by(|a, b| a.key().cmp(&b.key()));
        let mut file = tempfile::tempfile().map_err(spill_error)?;
        {
            let mut out = BufWriter::new(&mut file);
            for record in &records {
                encode(&mut out, record).map_err(spill_error)?;
            }
            out.flush().map_err(spill_error)?;
        }
        file.rewind().map_err(spill_error)?;
        self.runs.push(file);
        Ok(())
    }

    /// Folds every blob's records into its row and inserts the rows, in key order, into the empty blob view.
    pub(crate) async fn write(self, tx: &mut Tx) -> Result<(), Error> {
        let mut rows = self.into_rows()?;
        let mut round = Vec::with_capacity(ROWS_PER_ROUND);
        while let Some(row) = rows.next_row()? {
            round.push(row);
            if round.len() >= ROWS_PER_ROUND {
                insert_rows(tx, &std::mem::take(&mut round), "").await?;
            }
        }
        insert_rows(tx, &round, "").await?;
        Ok(())
    }

    /// Every blob's final row, in key order.
    fn into_rows(mut self) -> Result<Rows, Error> {
        let mut records = std::mem::take(&mut self.records);
        records.sort_unstable_by(|a, b| a.key().cmp(&b.key()));
        let mut sources: Vec<Source> = vec![Box::new(records.into_iter().map(Ok))];
        for run in self.runs.drain(..) {
            let mut input = BufReader::new(run);
            sources.push(Box::new(std::iter::from_fn(move || decode(&mut input).transpose())));
        }
        Ok(Rows { merged: Merge::new(sources)?, pending: None })
    }
}

/// A sorted source of records: the ones held in memory, or a spilled run.
type Source = Box<dyn Iterator<Item = Result<Record, Error>> + Send>;

/// The folded rows, one blob at a time.
struct Rows {
    merged: Merge,
    /// The first record of the next blob, read while finishing the one before.
    pending: Option<Record>,
}

impl Rows {
    fn next_row(&mut self) -> Result<Option<FileRow>, Error> {
        loop {
            let Some(first) = self.pending.take().map(Ok).or_else(|| self.merged.next_record().transpose()) else {
                return Ok(None);
            };
            let first = first?;
            let blake3 = first.blake3.clone();
            let mut state = None;
            fold(&mut state, first)?;
            while let Some(record) = self.merged.next_record()? {
                if record.blake3 != blake3 {
                    self.pending = Some(record);
                    break;
                }
                fold(&mut state, record)?;
            }
            // Records about a blob never ingested leave no row.
            if let Some(row) = state {
                return Ok(Some(row));
            }
        }
    }
}

/// Applies one record to its blob's row, as `Op::execute` would have changed it.
fn fold(state: &mut Option<FileRow>, record: Record) -> Result<(), Error> {
    let Record { blake3, seq, change, .. } = record;
    match change {
        Change::Ingest { sha256, size, media_type, file_id, at_ms } => match state {
            // A live row keeps its origin (`FILE_CONFLICT`); its history gains the ingestion.
            Some(row) if row.removed_sequence.is_none() => row.file_events.push_str(&history_entry(seq)),
            // A removed row starts anew, keeping its references and its history.
            Some(row) => {
                row.sha256 = sha256;
                row.size = size;
                row.media_type = media_type;
                row.ingested_sequence = seq;
                row.sequence = seq;
                row.idle_since_ms = at_ms;
                row.removed_sequence = None;
                row.file_events.push_str(&history_entry(seq));
            }
            None => {
                *state = Some(FileRow {
                    blake3,
                    sha256,
                    size,
                    media_type,
                    file_id,
                    ingested_sequence: seq,
                    sequence: seq,
                    refs: 0,
                    idle_since_ms: at_ms,
                    removed_sequence: None,
                    file_events: history_entry(seq),
                })
            }
        },
        // References to a blob without a row change nothing, as an update of no row.
        Change::Refs { delta, idle_at_ms } => {
            if let Some(row) = state {
                row.refs += delta;
                if let Some(at) = idle_at_ms.filter(|_| row.refs == 0) {
                    row.idle_since_ms = at;
                }
            }
        }
        Change::Remove => match state {
            Some(row) if row.removed_sequence.is_none() && row.refs == 0 => {
                row.removed_sequence = Some(seq);
                row.sequence = seq;
                row.file_events.push_str(&history_entry(seq));
            }
            _ => {
                return Err(Error::MissingSubject {
                    sequence: u64::try_from(seq).unwrap_or_default(),
                    event_type: crate::vocab::FILE_REMOVED.to_owned(),
                    subject: format!("unreferenced live blobs among {blake3}"),
                })
            }
        },
    }
    Ok(())
}

/// The k-way merge of sorted sources by `(blake3, n)`.
struct Merge {
    sources: Vec<Source>,
    heads: Vec<Option<Record>>,
    heap: BinaryHeap<Reverse<(String, u64, usize)>>,
}

impl Merge {
    fn new(mut sources: Vec<Source>) -> Result<Merge, Error> {
        let sources_len = sources.len();
        let mut heads = Vec::with_capacity(sources.len());
        let mut heap = BinaryHeap::new();
        for (i, source) in sources.iter_mut().enumerate() {
            let head = source.next().transpose()?;
            if let Some(record) = head.as_ref().filter(|_| sources_len > 1) {
                heap.push(Reverse((record.blake3.clone(), record.n, i)));
            }
            heads.push(head);
        }
        Ok(Merge { sources, heads, heap })
    }

    fn next_record(&mut self) -> Result<Option<Record>, Error> {
        if self.sources.len() == 1 {
            // Nothing spilled: the records held in memory, already sorted, need no heap.
            let Some(record) = self.heads[0].take() else { return Ok(None) };
            self.heads[0] = self.sources[0].next().transpose()?;
            return Ok(Some(record));
        }
        let Some(Reverse((_, _, i))) = self.heap.pop() else { return Ok(None) };
        let record = self.heads[i].take().expect("a source in the heap has a head");
        let next = self.sources[i].next().transpose()?;
        if let Some(next) = &next {
            self.heap.push(Reverse((next.blake3.clone(), next.n, i)));
        }
        self.heads[i] = next;
        Ok(Some(record))
    }
}

fn spill_error(err: std::io::Error) -> Error {
    Error::Spill(err.to_string())
}

fn put_str(out: &mut impl Write, text: &str) -> std::io::Result<()> {
    out.write_all(&(text.len() as u32).to_le_bytes())?;
    out.write_all(text.as_bytes())
}

fn put_i64(out: &mut impl Write, n: i64) -> std::io::Result<()> {
    out.write_all(&n.to_le_bytes())
}

fn encode(out: &mut impl Write, record: &Record) -> std::io::Result<()> {
    put_str(out, &record.blake3)?;
    out.write_all(&record.n.to_le_bytes())?;
    put_i64(out, record.seq)?;
    match &record.change {
        Change::Ingest { sha256, size, media_type, file_id, at_ms } => {
            out.write_all(&[0])?;
            put_str(out, sha256)?;
            put_i64(out, *size)?;
            match media_type {
                Some(media_type) => {
                    out.write_all(&[1])?;
                    put_str(out, media_type)?;
                }
                None => out.write_all(&[0])?,
            }
            out.write_all(file_id.as_bytes())?;
            put_i64(out, *at_ms)
        }
        Change::Refs { delta, idle_at_ms } => {
            out.write_all(&[1])?;
            put_i64(out, *delta)?;
            match idle_at_ms {
                Some(at) => {
                    out.write_all(&[1])?;
                    put_i64(out, *at)
                }
                None => out.write_all(&[0]),
            }
        }
        Change::Remove => out.write_all(&[2]),
    }
}

fn take<const N: usize>(input: &mut impl Read) -> Result<[u8; N], Error> {
    let mut bytes = [0u8; N];
    input.read_exact(&mut bytes).map_err(spill_error)?;
    Ok(bytes)
}

fn take_str(input: &mut impl Read) -> Result<String, Error> {
    let len = u32::from_le_bytes(take(input)?) as usize;
    let mut bytes = vec![0u8; len];
    input.read_exact(&mut bytes).map_err(spill_error)?;
    String::from_utf8(bytes).map_err(|err| Error::Spill(err.to_string()))
}

fn take_i64(input: &mut impl Read) -> Result<i64, Error> {
    Ok(i64::from_le_bytes(take(input)?))
}

/// The next record of a spilled run; `None` at its end.
fn decode(input: &mut BufReader<File>) -> Result<Option<Record>, Error> {
    use std::io::BufRead;
    if input.fill_buf().map_err(spill_error)?.is_empty() {
        return Ok(None);
    }
    let blake3 = take_str(input)?;
    let n = u64::from_le_bytes(take(input)?);
    let seq = take_i64(input)?;
    let change = match take::<1>(input)?[0] {
        0 => {
            let sha256 = take_str(input)?;
            let size = take_i64(input)?;
            let media_type = match take::<1>(input)?[0] {
                0 => None,
                _ => Some(take_str(input)?),
            };
            let file_id = Uuid::from_bytes(take(input)?);
            let at_ms = take_i64(input)?;
            Change::Ingest { sha256, size, media_type, file_id, at_ms }
        }
        1 => {
            let delta = take_i64(input)?;
            let idle_at_ms = match take::<1>(input)?[0] {
                0 => None,
                _ => Some(take_i64(input)?),
            };
            Change::Refs { delta, idle_at_ms }
        }
        _ => Change::Remove,
    };
    Ok(Some(Record { blake3, n, seq, change }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingest(blake3: &str, seq: i64) -> Record {
        let change = Change::Ingest {
            sha256: format!("sha256:{seq}"),
            size: seq,
            media_type: (seq % 2 == 0).then(|| "text/plain".to_owned()),
            file_id: Uuid::from_u128(seq as u128),
            at_ms: seq * 10,
        };
        Record { blake3: blake3.into(), n: seq as u64, seq, change }
    }

    #[test]
    fn spilled_records_read_back_as_written() {
        let records = vec![
            ingest("blake3:a", 1),
            ingest("blake3:b", 2),
            Record { blake3: "blake3:a".into(), n: 3, seq: 3, change: Change::Refs { delta: -2, idle_at_ms: Some(7) } },
            Record { blake3: "blake3:a".into(), n: 4, seq: 4, change: Change::Refs { delta: 1, idle_at_ms: None } },
            Record { blake3: "blake3:a".into(), n: 5, seq: 5, change: Change::Remove },
        ];
        let mut file = tempfile::tempfile().unwrap();
        {
            let mut out = BufWriter::new(&mut file);
            for record in &records {
                encode(&mut out, record).unwrap();
            }
        }
        file.rewind().unwrap();
        let mut input = BufReader::new(file);
        let read: Vec<Record> = std::iter::from_fn(|| decode(&mut input).unwrap()).collect();
        assert_eq!(read, records);
    }

    #[test]
    fn the_merge_keeps_each_blob_in_log_order() {
        let run = |records: Vec<Record>| -> Source { Box::new(records.into_iter().map(Ok)) };
        let sources = vec![
            run(vec![ingest("blake3:a", 1), ingest("blake3:c", 4)]),
            run(vec![ingest("blake3:a", 3), ingest("blake3:b", 2)]),
            run(vec![]),
        ];
        let mut merge = Merge::new(sources).unwrap();
        let mut keys = Vec::new();
        while let Some(record) = merge.next_record().unwrap() {
            keys.push((record.blake3, record.n));
        }
        let want = [("blake3:a", 1), ("blake3:a", 3), ("blake3:b", 2), ("blake3:c", 4)];
        assert_eq!(keys, want.map(|(b, n)| (b.to_owned(), n)));
    }

    fn row(blake3: &str, n: i64) -> FileRow {
        FileRow {
            blake3: blake3.to_owned(),
            sha256: format!("sha256:{n}"),
            size: n,
            media_type: None,
            file_id: Uuid::from_u128(n as u128),
            ingested_sequence: n,
            sequence: n,
            refs: 0,
            idle_since_ms: n,
            removed_sequence: None,
            file_events: history_entry(n),
        }
    }

    /// Blobs with every kind of change; with `stray`, a removal of a blob never ingested.
    fn feed(fold: &mut FileFold, stray: bool) {
        for n in 0..500i64 {
            let blake3 = format!("blake3:{:04}", (n * 7919) % 100);
            match n % 4 {
                0 | 1 => fold.ingest(row(&blake3, n)).unwrap(),
                2 => fold.refs(&blake3, n, 1, None).unwrap(),
                _ => fold.refs(&blake3, n, -1, Some(n)).unwrap(),
            }
        }
        for k in 0..20i64 {
            let blake3 = format!("blake3:r{k:02}");
            fold.ingest(row(&blake3, 1000 + 3 * k)).unwrap();
            fold.remove(&blake3, 1001 + 3 * k).unwrap();
            fold.ingest(row(&blake3, 1002 + 3 * k)).unwrap();
        }
        if stray {
            fold.remove("blake3:never", 2000).unwrap();
        }
    }

    fn collect(fold: FileFold) -> Result<Vec<FileRow>, Error> {
        let mut rows = fold.into_rows()?;
        std::iter::from_fn(|| rows.next_row().transpose()).collect()
    }

    #[test]
    fn spilled_folds_give_the_rows_of_one_in_memory() {
        let mut whole = FileFold::default();
        feed(&mut whole, false);
        assert!(whole.runs.is_empty());
        let mut spilled = FileFold { spill_at: 2_000, ..FileFold::default() };
        feed(&mut spilled, false);
        assert!(spilled.runs.len() > 10, "{} runs", spilled.runs.len());
        let (whole, spilled) = (collect(whole).unwrap(), collect(spilled).unwrap());
        assert_eq!(whole, spilled);
        assert_eq!(whole.len(), 70, "50 blobs ingested among the first 500 records, 20 ingested twice");
        assert!(whole.windows(2).all(|w| w[0].blake3 < w[1].blake3), "key order");
        let again = whole.iter().find(|r| r.blake3 == "blake3:r03").unwrap();
        assert_eq!(
            (again.history(), again.ingested_sequence, again.removed_sequence),
            (vec![1009, 1010, 1011], 1011, None)
        );

        let mut stray = FileFold { spill_at: 2_000, ..FileFold::default() };
        feed(&mut stray, true);
        assert!(matches!(collect(stray), Err(Error::MissingSubject { sequence: 2000, .. })));
    }

    #[test]
    fn a_removal_of_a_referenced_blob_is_refused() {
        let mut state = None;
        fold(&mut state, ingest("blake3:a", 1)).unwrap();
        let gained =
            Record { blake3: "blake3:a".into(), n: 2, seq: 2, change: Change::Refs { delta: 1, idle_at_ms: None } };
        fold(&mut state, gained).unwrap();
        let removal = Record { blake3: "blake3:a".into(), n: 3, seq: 3, change: Change::Remove };
        assert!(matches!(fold(&mut state, removal), Err(Error::MissingSubject { sequence: 3, .. })));
    }
}
