//! The workloads' drivers: each runs its workload, measures the limits that bound it in the same run, and puts its
//! rows into the report. A comparison with distribution starts each server fresh (`start`), the two taking turns
//! (`order`), and reports the median of its rounds (`median`).

mod append;
mod download;
mod feed;
mod gc;
mod large;
mod memory;
mod oci;
mod relay;
mod replay;
mod small;

pub(crate) use append::workload_c;
pub(crate) use download::workload_g;
pub(crate) use feed::workload_e;
pub(crate) use gc::workload_h;
pub(crate) use large::workload_a_f;
pub(crate) use memory::workload_k;
pub(crate) use oci::workload_i;
pub(crate) use relay::workload_j;
pub(crate) use replay::workload_d;
pub(crate) use small::workload_b;

use crate::servers::{Kind, Server};

type Bins<'a> = (&'a std::path::Path, &'a std::path::Path);

/// Starts a server fresh for one measured run, after writing back whatever the runs before left in the page cache:
/// distribution does not sync what it stores, and the disk must not spend the next run writing it.
async fn start(kind: Kind, bins: Bins<'_>, dir: &std::path::Path) -> anyhow::Result<Server> {
    let synced = tokio::task::spawn_blocking(|| std::process::Command::new("sync").status()).await??;
    anyhow::ensure!(synced.success(), "sync failed: {synced}");
    match kind {
        Kind::Artifactstore => Server::artifactstore(bins.0, dir).await,
        Kind::Distribution => Server::distribution(bins.1, dir).await,
    }
}

/// Which server goes first in a round: they take turns, so neither always meets a cold or a warm machine.
fn order(round: usize) -> [Kind; 2] {
    if round.is_multiple_of(2) {
        [Kind::Artifactstore, Kind::Distribution]
    } else {
        [Kind::Distribution, Kind::Artifactstore]
    }
}

/// The median of some measurements (the upper one of an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}
