//! A caller that got a call's reply sees the call's outcome applied: after
//! `Halt` the entry is gone, after `Move` the new id exists, and a `del` of
//! the new id sent after the reply is never undone.

use std::time::Duration;

use keywheel::{EntryOptions, Handler, Manager, Outcome};

/// Calls carry the outcome they return.
struct Steer;

impl Handler for Steer {
    type Id = u64;
    type Payload = u64;
    type Request = Option<Outcome<u64>>;
    type Reply = u64;
    type Message = ();

    async fn perform(&self, _id: &u64, _payload: &mut u64) -> Outcome<u64> {
        Outcome::Continue
    }

    async fn call(
        &self,
        _id: &u64,
        payload: &mut u64,
        outcome: Option<Outcome<u64>>,
    ) -> (u64, Outcome<u64>) {
        (*payload, outcome.unwrap_or(Outcome::Continue))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_entry_is_visible_after_reply() {
    let manager = Manager::builder(Steer).shards(8).build().unwrap();
    let every = EntryOptions::every(Duration::from_secs(60));

    for round in 0..2_000u64 {
        let old = round;
        let new = 1_000_000 + round;
        manager.put(old, round, every).await.unwrap();
        manager.call(&old, Some(Outcome::Move(new))).await.unwrap();

        let moved = manager.get(&new).await.unwrap();
        assert_eq!(
            moved.map(|snapshot| snapshot.payload),
            Some(round),
            "round {round}: the new id holds the payload once the call returned"
        );
        assert!(
            manager.del(&new).await.unwrap(),
            "round {round}: del of the moved entry"
        );
    }

    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(manager.len(), 0, "no moved entry came back after its del");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halted_entry_is_gone_after_reply() {
    let manager = Manager::builder(Steer).shards(8).build().unwrap();
    let every = EntryOptions::every(Duration::from_secs(60));

    for id in 0..2_000u64 {
        manager.put(id, id, every).await.unwrap();
        manager.call(&id, Some(Outcome::Halt)).await.unwrap();
        let after = manager.get(&id).await.unwrap();
        assert!(
            after.is_none(),
            "entry {id} is gone once the halting call returned"
        );
    }
    assert_eq!(manager.len(), 0, "every entry halted");
}
