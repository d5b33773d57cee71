//! How far each flush worker has got: the forward path's one signal back that is not a
//! [`Report`](crate::pipeline::handoff::Report). The [`Batcher`] reads it to move a partition to
//! an idle worker; a worker waits on it before persisting a batch that must follow another
//! worker's ([`Batch::after`]).
//!
//! [`Batcher`]: crate::pipeline::batch::Batcher
//! [`Batch::after`]: crate::pipeline::batch::Batch::after

/// How far a flush worker has got: the [`Batch::seq`](crate::pipeline::batch::Batch::seq) of
/// the last batch it took whose transaction has ended, committed or not (0 before its first).
/// Once its worker is gone, it stays where it was.
pub type Done = tokio::sync::watch::Receiver<u64>;

/// A worker's end of its [`Done`].
pub type Doing = tokio::sync::watch::Sender<u64>;

/// One progress a worker, both ends, in worker order.
pub fn channels(workers: usize) -> (Vec<Doing>, Vec<Done>) {
    (0..workers).map(|_| tokio::sync::watch::channel(0)).unzip()
}
