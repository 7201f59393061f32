//! Races `del`, `put`, calls and outcomes on the same ids from several tasks
//! on a multi-thread runtime, and checks the store's invariants.
//!
//! Every `put` creates a new incarnation (a unique number carried in the
//! payload), so each perform can be traced to the put that created it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keywheel::{EntryOptions, Handler, Manager, Outcome, TerminateReason};

const TASKS: u64 = 4;
const IDS_PER_TASK: u64 = 16;
const OPS_PER_TASK: usize = 3_000;
/// Moved entries land at `id + MOVE_OFFSET`, ids no task puts or deletes.
const MOVE_OFFSET: u64 = 1_000;

#[derive(Clone, Debug)]
struct Payload {
    incarnation: u64,
    performs: u64,
}

#[derive(Default)]
struct Trace {
    /// Incarnation → start times of its performs.
    performs: Mutex<HashMap<u64, Vec<Instant>>>,
    /// (id, incarnation) → terminate reasons.
    terminates: Mutex<HashMap<(u64, u64), Vec<TerminateReason>>>,
    /// Ids with a callback running now, and overlaps seen.
    running: Mutex<HashMap<u64, u32>>,
    overlaps: AtomicU64,
}

struct Racer {
    trace: Arc<Trace>,
}

impl Racer {
    fn enter(&self, id: u64) {
        let mut running = self.trace.running.lock().unwrap();
        let count = running.entry(id).or_default();
        *count += 1;
        if *count > 1 {
            self.trace.overlaps.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn leave(&self, id: u64) {
        *self.trace.running.lock().unwrap().get_mut(&id).unwrap() -= 1;
    }
}

impl Handler for Racer {
    type Id = u64;
    type Payload = Payload;
    type Request = ();
    type Reply = u64;
    type Message = ();

    async fn perform(&self, id: &u64, payload: &mut Payload) -> Outcome<u64> {
        self.enter(*id);
        self.trace
            .performs
            .lock()
            .unwrap()
            .entry(payload.incarnation)
            .or_default()
            .push(Instant::now());
        payload.performs += 1;
        tokio::task::yield_now().await;
        self.leave(*id);

        // A spread of outcomes, decided by the incarnation and count so
        // runs are varied but every outcome kind occurs.
        match (payload.incarnation + payload.performs) % 23 {
            0 => Outcome::Halt,
            1 if *id < MOVE_OFFSET => Outcome::Move(*id + MOVE_OFFSET),
            2 => Outcome::Reschedule(Duration::from_millis(1 + payload.performs % 3)),
            _ => Outcome::Continue,
        }
    }

    async fn call(&self, id: &u64, payload: &mut Payload, _request: ()) -> (u64, Outcome<u64>) {
        self.enter(*id);
        tokio::task::yield_now().await;
        self.leave(*id);
        (payload.incarnation, Outcome::Continue)
    }

    async fn cast(&self, id: &u64, _payload: &mut Payload, _message: ()) -> Outcome<u64> {
        self.enter(*id);
        self.leave(*id);
        Outcome::Continue
    }

    async fn terminate(&self, id: &u64, payload: Payload, reason: TerminateReason) {
        self.trace
            .terminates
            .lock()
            .unwrap()
            .entry((*id, payload.incarnation))
            .or_default()
            .push(reason);
    }
}

/// When a task's `del` of an incarnation returned.
type Deleted = Arc<Mutex<HashMap<u64, Instant>>>;

async fn race(manager: Manager<Racer>, task: u64, incarnations: Arc<AtomicU64>, deleted: Deleted) {
    let ids: Vec<u64> = (0..IDS_PER_TASK).map(|i| task * IDS_PER_TASK + i).collect();
    let mut live: HashMap<u64, u64> = HashMap::new();
    let mut state = task.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;

    for _ in 0..OPS_PER_TASK {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let id = ids[(state % IDS_PER_TASK) as usize];
        match (state >> 8) % 6 {
            0 | 1 => {
                let incarnation = incarnations.fetch_add(1, Ordering::Relaxed);
                let payload = Payload {
                    incarnation,
                    performs: 0,
                };
                let every = Duration::from_millis(1 + (state >> 16) % 3);
                manager
                    .put(id, payload, EntryOptions::every(every))
                    .await
                    .unwrap();
                live.insert(id, incarnation);
            }
            2 => {
                let existed = manager.del(&id).await.unwrap();
                let returned = Instant::now();
                if let Some(incarnation) = live.remove(&id) {
                    if existed {
                        deleted.lock().unwrap().insert(incarnation, returned);
                    }
                }
            }
            3 => {
                let _ = manager.call(&id, ()).await;
            }
            4 => {
                let _ = manager.cast(&id, ()).await;
            }
            _ => tokio::time::sleep(Duration::from_micros(300)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn races_keep_invariants() {
    let trace = Arc::new(Trace::default());
    let manager = Manager::builder(Racer {
        trace: trace.clone(),
    })
    .shards(4)
    .workers(4)
    .build()
    .unwrap();
    let incarnations = Arc::new(AtomicU64::new(1));
    let deleted = Deleted::default();

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        tasks.push(tokio::spawn(race(
            manager.clone(),
            task,
            incarnations.clone(),
            deleted.clone(),
        )));
    }
    for task in tasks {
        task.await.unwrap();
    }

    // The store equals the schedule: an entry that is stored either keeps
    // performing or has ended with a terminate (outcomes still change the
    // store while this runs).
    let mut before = HashMap::new();
    for id in (0..TASKS * IDS_PER_TASK).chain(MOVE_OFFSET..MOVE_OFFSET + TASKS * IDS_PER_TASK) {
        if let Some(snapshot) = manager.get(&id).await.unwrap() {
            before.insert(
                id,
                (snapshot.payload.incarnation, snapshot.payload.performs),
            );
        }
    }
    assert!(
        !before.is_empty(),
        "some entries are live when the racing stops"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    for (id, (incarnation, performs)) in &before {
        let performed = trace
            .performs
            .lock()
            .unwrap()
            .get(incarnation)
            .map_or(0, Vec::len) as u64;
        let ended = trace
            .terminates
            .lock()
            .unwrap()
            .contains_key(&(*id, *incarnation));
        assert!(
            performed > *performs || ended,
            "entry {id} (incarnation {incarnation}) is neither performing nor terminated"
        );
    }

    // Every entry halts within 23 performs of at most 3 ms, so the store
    // drains by itself; then nothing is stored and nothing performs.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(manager.len(), 0, "entries left after every entry halted");
    let settled = manager.performs();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        manager.performs(),
        settled,
        "performs after the store emptied"
    );

    let report = manager.shutdown(Duration::from_secs(2)).await;
    assert_eq!(
        report.cancelled, 0,
        "no callback should need cancelling: {report:?}"
    );

    assert_eq!(
        trace.overlaps.load(Ordering::Relaxed),
        0,
        "callbacks of one id overlapped"
    );

    // No perform of an incarnation starts after its `del` returned.
    let performs = trace.performs.lock().unwrap();
    let mut resurrections = Vec::new();
    for (incarnation, returned) in deleted.lock().unwrap().iter() {
        for start in performs.get(incarnation).into_iter().flatten() {
            if start > returned {
                resurrections.push((*incarnation, start.duration_since(*returned)));
            }
        }
    }
    assert!(
        resurrections.is_empty(),
        "performs started after del returned: {:?}",
        &resurrections[..resurrections.len().min(5)]
    );

    // `terminate` ran exactly once per (id, incarnation) that ever existed.
    let terminates = trace.terminates.lock().unwrap();
    let twice: Vec<_> = terminates
        .iter()
        .filter(|(_, reasons)| reasons.len() != 1)
        .collect();
    assert!(
        twice.is_empty(),
        "terminate ran more than once: {:?}",
        &twice[..twice.len().min(5)]
    );
    let total_incarnations = incarnations.load(Ordering::Relaxed) - 1;
    let terminated_incarnations = terminates
        .keys()
        .filter(|(id, _)| *id < MOVE_OFFSET)
        .map(|(_, incarnation)| *incarnation)
        .collect::<std::collections::HashSet<_>>()
        .len() as u64;
    assert_eq!(
        terminated_incarnations, total_incarnations,
        "every put's entry ends with exactly one terminate"
    );

    let moved = terminates
        .values()
        .filter(|reasons| reasons[0] == TerminateReason::Moved)
        .count();
    let halted = terminates
        .values()
        .filter(|reasons| reasons[0] == TerminateReason::Halted)
        .count();
    assert!(
        moved > 0 && halted > 0,
        "outcomes were exercised: moved {moved}, halted {halted}"
    );
}
