//! A relayed link we dialed keeps trying to go direct: a bounded series of tries with backoff
//! ([`UPGRADE_BACKOFF`]), started again from the beginning when our network changes, and ended by
//! the link's end or the first success (`Links::try_direct`, which then retires the relayed link).

use std::time::Duration;

use tracing::{debug, info};

use super::{LinkHandle, Links};

/// When a relayed link tries to go direct, counted from the previous try: quickly at first (a NAT
/// that just let UDP through), then less and less often, and after the last one no more until the
/// network changes. About eight and a half minutes in all.
pub const UPGRADE_BACKOFF: [Duration; 8] = [
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
    Duration::from_secs(32),
    Duration::from_secs(64),
    Duration::from_secs(128),
    Duration::from_secs(256),
];

/// Starts trying to move `relayed` to a direct path, on the client's tracker.
pub(super) fn spawn(links: Links, relayed: LinkHandle) {
    links.clone().run(run(links, relayed));
}

async fn run(links: Links, relayed: LinkHandle) {
    let peer = relayed.peer().clone();
    let mut network = links.parts().reach.network_changes();
    let mut step = 0;
    loop {
        let delay = UPGRADE_BACKOFF.get(step).copied();
        tokio::select! {
            _ = relayed.closed() => return,
            _ = relayed.retired() => return,
            changed = network.changed() => {
                if changed.is_err() {
                    return;
                }
                step = 0;
                continue;
            }
            _ = tokio::time::sleep(delay.unwrap_or(Duration::MAX)), if delay.is_some() => {}
        }
        let parts = links.parts();
        if let Some(reach) = parts.directory.reach() {
            parts.reach.refresh_if_stale(&parts.directory, reach).await;
        }
        match links.try_direct(&relayed).await {
            Ok(()) => return,
            Err(e) => {
                step += 1;
                match UPGRADE_BACKOFF.get(step) {
                    Some(next) => debug!("no direct path to {peer} yet ({e}); next try in {next:?}"),
                    None => info!(
                        "no direct path to {peer} ({e}); staying on the relay until the network changes"
                    ),
                }
            }
        }
    }
}
