//! Admission control: every lab call takes a slot of the server-wide limit and, for the costly
//! RPCs, one of its own RPC's limit and one of the costly RPCs' shared limit, which is the
//! server-wide one less the slots reserved for `Fast`: however full the costly RPCs, the
//! canary still gets in. No slot: RESOURCE_EXHAUSTED at once, never an unbounded queue. The
//! slots are owned permits that travel with the handler task, so a slot frees when the work
//! really stops, not when the caller stops waiting.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::LabError;
use crate::{config::Limits, lab::Rpc};

#[derive(Debug)]
pub struct Admission {
    global: Arc<Semaphore>,
    global_limit: usize,
    /// The costly RPCs together: `max_in_flight - reserved_for_fast`.
    costly: Arc<Semaphore>,
    costly_limit: usize,
    /// The slots of each RPC, indexed by `Rpc as usize`; `None` for an RPC without a limit of
    /// its own (see [`Rpc::is_costly`]).
    per_rpc: [Option<Arc<Semaphore>>; Rpc::ALL.len()],
    per_rpc_limit: usize,
}

/// The slots a running call holds; dropping it frees them.
#[derive(Debug)]
pub struct Admitted {
    _global: OwnedSemaphorePermit,
    _rpc: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

impl Admission {
    pub fn new(limits: &Limits) -> Self {
        let costly_limit = limits
            .max_in_flight
            .saturating_sub(limits.reserved_for_fast)
            .max(1);
        Self {
            global: Arc::new(Semaphore::new(limits.max_in_flight)),
            global_limit: limits.max_in_flight,
            costly: Arc::new(Semaphore::new(costly_limit)),
            costly_limit,
            per_rpc: Rpc::ALL.map(|rpc| {
                rpc.is_costly()
                    .then(|| Arc::new(Semaphore::new(limits.max_in_flight_per_rpc)))
            }),
            per_rpc_limit: limits.max_in_flight_per_rpc,
        }
    }

    /// # Errors
    /// [`LabError::Overloaded`] when the server or this RPC has no free slot.
    pub fn admit(&self, rpc: Rpc) -> Result<Admitted, LabError> {
        // `Rpc::ALL` lists every variant in declaration order, so `rpc as usize` is in range.
        let rpc_permit = match &self.per_rpc[rpc as usize] {
            Some(slots) => {
                let own =
                    Arc::clone(slots)
                        .try_acquire_owned()
                        .map_err(|_| LabError::Overloaded {
                            what: format!("{rpc} calls"),
                            limit: self.per_rpc_limit,
                            flag: "--max-in-flight-per-rpc",
                        })?;
                let shared = Arc::clone(&self.costly).try_acquire_owned().map_err(|_| {
                    LabError::Overloaded {
                        what: "costly lab calls (all but Fast)".to_owned(),
                        limit: self.costly_limit,
                        flag: "--max-in-flight less --reserved-for-fast",
                    }
                })?;
                Some((own, shared))
            }
            None => None,
        };
        let global =
            Arc::clone(&self.global)
                .try_acquire_owned()
                .map_err(|_| LabError::Overloaded {
                    what: "lab calls".to_owned(),
                    limit: self.global_limit,
                    flag: "--max-in-flight",
                })?;
        Ok(Admitted {
            _global: global,
            _rpc: rpc_permit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_each_limit_and_frees_on_drop() {
        let admission = Admission::new(&Limits {
            max_in_flight: 3,
            max_in_flight_per_rpc: 2,
            reserved_for_fast: 0,
            ..Limits::default()
        });
        let a = admission.admit(Rpc::CpuBound).unwrap();
        let _b = admission.admit(Rpc::CpuBound).unwrap();
        let err = admission.admit(Rpc::CpuBound).unwrap_err();
        assert!(err.to_string().contains("--max-in-flight-per-rpc"), "{err}");
        let _c = admission.admit(Rpc::Fast).unwrap();
        let err = admission.admit(Rpc::Fast).unwrap_err();
        assert!(err.to_string().contains("--max-in-flight)"), "{err}");
        drop(a);
        assert!(admission.admit(Rpc::Fast).is_ok());
    }

    #[test]
    fn costly_rpcs_leave_the_reserve_to_fast() {
        let admission = Admission::new(&Limits {
            max_in_flight: 4,
            max_in_flight_per_rpc: 4,
            reserved_for_fast: 2,
            ..Limits::default()
        });
        let _sleep = admission.admit(Rpc::Sleep).unwrap();
        let _upstream = admission.admit(Rpc::UpstreamCall).unwrap();
        let err = admission.admit(Rpc::CpuBound).unwrap_err();
        assert!(err.to_string().contains("--reserved-for-fast"), "{err}");
        let _fast = admission.admit(Rpc::Fast).expect("the reserve is Fast's");
        let _fast2 = admission.admit(Rpc::Fast).expect("the reserve is Fast's");
        assert!(
            admission.admit(Rpc::Fast).is_err(),
            "the server-wide limit still holds"
        );
    }
}
