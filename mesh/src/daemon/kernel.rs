//! The daemon's side of the kernel: its XFRM policies as a whole (installed as diffs
//! against what is there), and the ESP SA pairs of its child SAs.
//!
//! Only entries inside `xfrm`'s owned ranges are read back, changed or deleted, so what
//! an operator or another IKE daemon installed is never touched.

use crate::supervisor::Pair;
use xfrm::{Policy, PolicyId, Sa, SaId, SaInfo, Xfrm};

/// The XFRM tables of the daemon's namespace, and what of them is ours.
pub struct Kernel {
    x: Xfrm,
    /// Our policies as installed, in the order they were rendered.
    installed: Vec<Policy>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel").field("policies", &self.installed.len()).finish_non_exhaustive()
    }
}

impl Kernel {
    /// Opens the XFRM tables and reads back the policies of ours already there (from a
    /// previous run), so that the first [`Kernel::apply`] changes only what differs.
    pub fn open() -> Result<Self, String> {
        let mut x = Xfrm::open().map_err(|e| format!("cannot open XFRM netlink: {e}"))?;
        let installed = x
            .dump_policies()
            .map_err(|e| format!("cannot read XFRM policies: {e}"))?
            .into_iter()
            .filter(xfrm::PolicyInfo::is_ours)
            .map(|p| Policy {
                selector: p.id.selector,
                dir: p.id.dir,
                priority: p.priority,
                action: p.action,
                mark: p.id.mark,
            })
            .collect();
        Ok(Self { x, installed })
    }

    /// What the kernel can do: `None` when ESP works, else the one line that says what
    /// is missing.
    pub fn esp_problem(&mut self) -> Option<String> {
        match self.x.probe() {
            Ok(caps) if caps.esp_ready() => None,
            Ok(caps) => Some(caps.problem().unwrap_or_else(|| caps.summary())),
            Err(e) => Some(format!("cannot probe the kernel for ESP: {e}")),
        }
    }

    /// Our policies found at start (a previous run's).
    pub fn installed(&self) -> &[Policy] {
        &self.installed
    }

    /// Changes our policies: `add` replaced in place or added (atomic in the kernel,
    /// so a level change never leaves a gap), `remove` deleted. Returns one line per
    /// entry that failed; the rest is applied.
    pub fn apply_diff(&mut self, add: &[Policy], remove: &[Policy]) -> Vec<String> {
        let mut errors = Vec::new();
        match self.x.update_policies(add) {
            Ok(results) => {
                errors.extend(results.into_iter().filter_map(Result::err).map(|e| e.to_string()));
            }
            Err(e) => errors.push(format!("XFRM policies: {e}")),
        }
        let ids: Vec<PolicyId> = remove.iter().map(Policy::id).collect();
        match self.x.delete_policies(&ids) {
            Ok(results) => errors.extend(
                results
                    .into_iter()
                    .filter_map(Result::err)
                    .filter(|e| !matches!(e, xfrm::Error::NotFound { .. }))
                    .map(|e| e.to_string()),
            ),
            Err(e) => errors.push(format!("XFRM policies: {e}")),
        }
        errors
    }

    /// Adds one SA.
    pub fn add(&mut self, sa: &Sa) -> Result<(), String> {
        self.x.add_sa(sa).map_err(|e| e.to_string())
    }

    /// Deletes one SA (one already gone is fine).
    pub fn delete(&mut self, id: &SaId) {
        match self.x.delete_sa(id) {
            Ok(()) | Err(xfrm::Error::NotFound { .. }) => {}
            Err(e) => tracing::warn!("cannot delete an SA from the kernel: {e}"),
        }
    }

    /// Deletes a child SA's pair (those already gone are fine).
    pub fn remove(&mut self, pair: &Pair) {
        if let Ok(results) = self.x.delete_sas(&[pair.in_id(), pair.out_id()]) {
            for e in results.into_iter().filter_map(Result::err) {
                if !matches!(e, xfrm::Error::NotFound { .. }) {
                    tracing::warn!("cannot delete a child SA from the kernel: {e}");
                }
            }
        }
    }

    /// Bytes (in, out) the kernel counted on a pair; zero for an SA that is gone.
    pub fn counters(&mut self, pair: &Pair) -> (u64, u64) {
        let (inbound, outbound) = (pair.in_id(), pair.out_id());
        let bytes = |x: &mut Xfrm, id| x.get_sa(&id).map_or(0, |s: SaInfo| s.bytes);
        (bytes(&mut self.x, inbound), bytes(&mut self.x, outbound))
    }

    /// Every SA of ours in the kernel.
    pub fn our_sas(&mut self) -> Result<Vec<SaInfo>, String> {
        Ok(self
            .x
            .dump_sas()
            .map_err(|e| format!("cannot read XFRM SAs: {e}"))?
            .into_iter()
            .filter(SaInfo::is_ours)
            .collect())
    }

    /// Deletes SAs by ID (stale ones found at start).
    pub fn delete_sas(&mut self, ids: &[SaId]) {
        if let Err(e) = self.x.delete_sas(ids) {
            tracing::warn!("cannot delete stale SAs: {e}");
        }
    }

    /// Deletes every SA and policy of ours (`on_stop = "flush"`).
    pub fn flush(&mut self) -> Result<xfrm::Flushed, String> {
        self.installed.clear();
        self.x.flush_ours().map_err(|e| e.to_string())
    }
}
