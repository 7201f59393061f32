//! Model-based test: random sequences of store operations and clock
//! advances, run on a paused clock against a plain reference model.
//!
//! Every entry performs `payload += 1` and halts when the payload becomes a
//! multiple of 5; casts add to the payload and calls return it. First due
//! times are offset by 5 ms from the 10 ms grid the test clock moves on, so
//! no perform is due at the instant the test looks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keywheel::{EntryOptions, FirstRun, Handler, Manager, Outcome, PutResult, TerminateReason};
use proptest::prelude::*;

type Terminated = Arc<Mutex<Vec<(u64, u64, TerminateReason)>>>;

struct Counter {
    terminated: Terminated,
}

impl Handler for Counter {
    type Id = u64;
    type Payload = u64;
    type Request = ();
    type Reply = u64;
    type Message = u64;

    async fn perform(&self, _id: &u64, payload: &mut u64) -> Outcome<u64> {
        *payload += 1;
        if (*payload).is_multiple_of(5) {
            Outcome::Halt
        } else {
            Outcome::Continue
        }
    }

    async fn call(&self, _id: &u64, payload: &mut u64, _request: ()) -> (u64, Outcome<u64>) {
        (*payload, Outcome::Continue)
    }

    async fn cast(&self, _id: &u64, payload: &mut u64, add: u64) -> Outcome<u64> {
        *payload += add;
        Outcome::Continue
    }

    async fn terminate(&self, id: &u64, payload: u64, reason: TerminateReason) {
        self.terminated.lock().unwrap().push((*id, payload, reason));
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put { id: u64, payload: u64, every: u64 },
    PutNew { id: u64, payload: u64, every: u64 },
    Del { id: u64 },
    Get { id: u64 },
    Call { id: u64 },
    Cast { id: u64, add: u64 },
    Advance { tens: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0u64..4;
    let every = prop_oneof![Just(10u64), Just(20), Just(30)];
    prop_oneof![
        (id.clone(), 0u64..4, every.clone()).prop_map(|(id, payload, every)| Op::Put {
            id,
            payload,
            every
        }),
        (id.clone(), 0u64..4, every).prop_map(|(id, payload, every)| Op::PutNew {
            id,
            payload,
            every
        }),
        id.clone().prop_map(|id| Op::Del { id }),
        id.clone().prop_map(|id| Op::Get { id }),
        id.clone().prop_map(|id| Op::Call { id }),
        (id, 1u64..3).prop_map(|(id, add)| Op::Cast { id, add }),
        (1u64..8).prop_map(|tens| Op::Advance { tens }),
    ]
}

/// The reference: the effect the contract specifies for each operation.
#[derive(Default)]
struct Model {
    now: u64,
    entries: BTreeMap<u64, ModelEntry>,
    terminated: Vec<(u64, u64, TerminateReason)>,
    performs: u64,
}

struct ModelEntry {
    payload: u64,
    every: u64,
    next_due: u64,
    performs: u64,
}

impl Model {
    fn put(&mut self, id: u64, payload: u64, every: u64, if_absent: bool) -> PutResult {
        if let Some(old) = self.entries.get(&id) {
            if if_absent {
                return PutResult::Exists;
            }
            self.terminated
                .push((id, old.payload, TerminateReason::Replaced));
        }
        let existed = self.entries.contains_key(&id);
        self.entries.insert(
            id,
            ModelEntry {
                payload,
                every,
                next_due: self.now + every + 5,
                performs: 0,
            },
        );
        if existed {
            PutResult::Replaced
        } else {
            PutResult::Inserted
        }
    }

    fn advance(&mut self, by: u64) {
        let until = self.now + by;
        loop {
            let next = self
                .entries
                .iter()
                .filter(|(_, entry)| entry.next_due < until)
                .min_by_key(|(_, entry)| entry.next_due)
                .map(|(id, entry)| (*id, entry.next_due));
            let Some((id, due)) = next else {
                break;
            };
            self.now = due;
            self.performs += 1;
            let entry = self.entries.get_mut(&id).unwrap();
            entry.payload += 1;
            entry.performs += 1;
            if entry.payload.is_multiple_of(5) {
                let entry = self.entries.remove(&id).unwrap();
                self.terminated
                    .push((id, entry.payload, TerminateReason::Halted));
            } else {
                entry.next_due = due + entry.every;
            }
        }
        self.now = until;
    }
}

fn options(every: u64) -> EntryOptions {
    EntryOptions::every(Duration::from_millis(every))
        .first_run(FirstRun::After(Duration::from_millis(every + 5)))
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let terminated = Terminated::default();
    let manager = Manager::builder(Counter {
        terminated: terminated.clone(),
    })
    .shards(4)
    .workers(2)
    .build()
    .unwrap();
    manager.ready().await;
    let mut model = Model::default();

    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Put { id, payload, every } => {
                let got = manager.put(id, payload, options(every)).await.unwrap();
                let expected = model.put(id, payload, every, false);
                prop_assert_eq!(got, expected, "step {}: put {}", step, id);
            }
            Op::PutNew { id, payload, every } => {
                let got = manager.put_new(id, payload, options(every)).await.unwrap();
                let expected = model.put(id, payload, every, true);
                prop_assert_eq!(got, expected, "step {}: put_new {}", step, id);
            }
            Op::Del { id } => {
                let got = manager.del(&id).await.unwrap();
                let expected = match model.entries.remove(&id) {
                    Some(entry) => {
                        model
                            .terminated
                            .push((id, entry.payload, TerminateReason::Deleted));
                        true
                    }
                    None => false,
                };
                prop_assert_eq!(got, expected, "step {}: del {}", step, id);
            }
            Op::Get { id } => {
                let got = manager
                    .get(&id)
                    .await
                    .unwrap()
                    .map(|s| (s.payload, s.performs));
                let expected = model.entries.get(&id).map(|e| (e.payload, e.performs));
                prop_assert_eq!(got, expected, "step {}: get {}", step, id);
            }
            Op::Call { id } => {
                let got = manager.call(&id, ()).await.ok();
                let expected = model.entries.get(&id).map(|e| e.payload);
                prop_assert_eq!(got, expected, "step {}: call {}", step, id);
            }
            Op::Cast { id, add } => {
                let got = manager.cast(&id, add).await.is_ok();
                let expected = match model.entries.get_mut(&id) {
                    Some(entry) => {
                        entry.payload += add;
                        true
                    }
                    None => false,
                };
                prop_assert_eq!(got, expected, "step {}: cast {}", step, id);
            }
            Op::Advance { tens } => {
                tokio::time::sleep(Duration::from_millis(tens * 10)).await;
                model.advance(tens * 10);
            }
        }
        prop_assert_eq!(manager.len(), model.entries.len(), "step {}: len", step);
    }

    // Let casts still on the pool finish before the final comparison.
    let ids: Vec<u64> = model.entries.keys().copied().collect();
    for id in &ids {
        let got = manager.call(id, ()).await.ok();
        prop_assert_eq!(
            got,
            model.entries.get(id).map(|e| e.payload),
            "final call {}",
            id
        );
    }

    manager.shutdown(Duration::from_secs(1)).await;
    for (id, entry) in std::mem::take(&mut model.entries) {
        model
            .terminated
            .push((id, entry.payload, TerminateReason::Shutdown));
    }

    let mut got = terminated.lock().unwrap().clone();
    got.sort_by_key(|(id, payload, reason)| (*id, *payload, format!("{reason:?}")));
    let mut expected = model.terminated.clone();
    expected.sort_by_key(|(id, payload, reason)| (*id, *payload, format!("{reason:?}")));
    prop_assert_eq!(got, expected, "terminate calls");
    prop_assert_eq!(manager.performs(), model.performs, "performs");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(run(ops))?;
    }
}
