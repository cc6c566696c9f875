//! Hashing a stream of frames while it arrives: `Pipeline`.

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::DualHasher;

/// A stream is hashed in batches of this many bytes...
pub const PIPELINE_BATCH: usize = 1024 * 1024;
/// ... of which at most this many wait for the hashing.
const QUEUE: usize = 8;

/// The hashing task stopped before it took in every frame (it panicked).
#[derive(Debug, thiserror::Error)]
#[error("hashing the stream failed: {0}")]
pub struct PipelineError(String);

/// Feeds a `DualHasher` the frames of a stream as they arrive.
///
/// A stream shorter than `PIPELINE_BATCH` is hashed on the caller's thread when it settles. A longer one is hashed
/// by a task of its own that takes whatever batches are queued, on a blocking thread, again and again, while the
/// caller goes on receiving (and writing) the next frames: receiving, hashing and writing overlap instead of taking
/// turns. The task holds no blocking thread while it waits for bytes. Must be used inside a tokio runtime.
#[derive(Debug)]
pub struct Pipeline {
    /// `None` while the task has it.
    hasher: Option<DualHasher>,
    pending: Vec<Bytes>,
    pending_len: usize,
    task: Option<Task>,
}

/// The task behind a `Pipeline` (`hash_behind`) and its queue.
#[derive(Debug)]
struct Task {
    batches: mpsc::Sender<Vec<Bytes>>,
    done: JoinHandle<Option<DualHasher>>,
}

impl Pipeline {
    /// A pipeline that continues `hasher`.
    pub fn new(hasher: DualHasher) -> Pipeline {
        Pipeline { hasher: Some(hasher), pending: Vec::new(), pending_len: 0, task: None }
    }

    /// Queues the next frame; waits only when the task has a full queue of batches to hash.
    pub async fn update(&mut self, frame: Bytes) {
        self.pending_len += frame.len();
        self.pending.push(frame);
        if self.pending_len >= PIPELINE_BATCH {
            self.send_pending().await;
        }
    }

    async fn send_pending(&mut self) {
        let batch = std::mem::take(&mut self.pending);
        self.pending_len = 0;
        let hasher = &mut self.hasher;
        let Task { batches, .. } = self.task.get_or_insert_with(|| {
            let (batches, queue) = mpsc::channel::<Vec<Bytes>>(QUEUE);
            let hasher = hasher.take().expect("the task starts once");
            Task { batches, done: tokio::spawn(hash_behind(hasher, queue)) }
        });
        // The task stops early only if hashing panicked, which `settle` reports.
        let _ = batches.send(batch).await;
    }

    /// Waits until every frame queued so far is hashed; the hasher is then at hand, and `finish` returns at once.
    pub async fn settle(&mut self) -> Result<&DualHasher, PipelineError> {
        match self.task.take() {
            None => {
                let hasher = self.hasher.as_mut().expect("no task took it");
                hasher.update_all(&self.pending);
            }
            Some(task) => {
                let Task { batches, done } = task;
                if self.pending_len > 0 {
                    let _ = batches.send(std::mem::take(&mut self.pending)).await;
                }
                drop(batches);
                self.hasher = Some(match done.await {
                    Ok(Some(hasher)) => hasher,
                    Ok(None) => return Err(PipelineError("a hashing thread panicked".to_owned())),
                    Err(err) => return Err(PipelineError(err.to_string())),
                });
            }
        }
        self.pending.clear();
        self.pending_len = 0;
        Ok(self.hasher.as_ref().expect("settled above"))
    }

    /// The hasher, with every frame fed to it.
    pub async fn finish(mut self) -> Result<DualHasher, PipelineError> {
        self.settle().await?;
        Ok(self.hasher.take().expect("settled"))
    }
}

/// The task behind `Pipeline`: feeds whatever batches are queued to the hasher in one call on a blocking thread,
/// until the queue closes. `None` if hashing panicked.
async fn hash_behind(mut hasher: DualHasher, mut queue: mpsc::Receiver<Vec<Bytes>>) -> Option<DualHasher> {
    while let Some(first) = queue.recv().await {
        let mut frames = first;
        while let Ok(more) = queue.try_recv() {
            frames.extend(more);
        }
        hasher = tokio::task::spawn_blocking(move || {
            hasher.update_all(&frames);
            hasher
        })
        .await
        .ok()?;
    }
    Some(hasher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DualDigest;

    /// Frames of `sizes` bytes, each byte its offset in the stream modulo 251.
    fn frames(sizes: &[usize]) -> (Vec<Bytes>, Vec<u8>) {
        let mut whole = Vec::new();
        let frames = sizes
            .iter()
            .map(|&size| {
                let frame: Vec<u8> = (whole.len()..whole.len() + size).map(|i| (i % 251) as u8).collect();
                whole.extend_from_slice(&frame);
                Bytes::from(frame)
            })
            .collect();
        (frames, whole)
    }

    async fn pipelined(start: &[u8], sizes: &[usize]) -> (DualHasher, Vec<u8>) {
        let mut hasher = DualHasher::new();
        hasher.update(start);
        let (frames, whole) = frames(sizes);
        let mut pipeline = Pipeline::new(hasher);
        for frame in frames {
            pipeline.update(frame).await;
        }
        (pipeline.finish().await.unwrap(), whole)
    }

    #[tokio::test]
    async fn a_short_stream_hashes_as_one_pass() {
        let (hasher, whole) = pipelined(b"", &[1, 0, 4096, 17]).await;
        assert_eq!(hasher.finalize(), DualDigest::of(&whole));
    }

    #[tokio::test]
    async fn a_long_stream_hashed_behind_equals_one_pass_after_what_came_before() {
        // Past several batches and the queue, with frames that straddle batch ends.
        let sizes: Vec<usize> = (0..40).map(|i| 300_000 + i * 7_001).collect();
        let (hasher, whole) = pipelined(b"earlier chunk", &sizes).await;
        let mut all = b"earlier chunk".to_vec();
        all.extend_from_slice(&whole);
        assert_eq!(hasher.finalize(), DualDigest::of(&all));
    }

    #[tokio::test]
    async fn settle_gives_the_digest_so_far_and_the_stream_goes_on() {
        let (frames, whole) = frames(&[PIPELINE_BATCH, PIPELINE_BATCH / 2, 10]);
        let mut pipeline = Pipeline::new(DualHasher::new());
        for frame in frames.iter().take(2).cloned() {
            pipeline.update(frame).await;
        }
        let so_far = pipeline.settle().await.unwrap().clone().finalize();
        assert_eq!(so_far, DualDigest::of(&whole[..PIPELINE_BATCH * 3 / 2]));
        pipeline.update(frames[2].clone()).await;
        assert_eq!(pipeline.finish().await.unwrap().finalize(), DualDigest::of(&whole));
    }
}
