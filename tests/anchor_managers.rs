//! Two managers in one program: each has its own entries, even under the
//! same ids, and stopping one leaves the other running. Paused clock.

mod common;

use std::time::Duration;

use common::{Log, Recorder};
use keywheel::{EntryOptions, Manager, State};

#[tokio::test(start_paused = true)]
async fn two_managers_share_ids_without_clash() {
    let left_log = Log::new();
    let right_log = Log::new();
    let left = Manager::builder(Recorder::new(&left_log))
        .name("left")
        .build()
        .unwrap();
    let right = Manager::builder(Recorder::new(&right_log))
        .name("right")
        .build()
        .unwrap();
    assert_eq!(left.name(), "left", "name of the first manager");
    assert_eq!(right.name(), "right", "name of the second manager");

    for id in 1..=3 {
        let every = EntryOptions::every(Duration::from_millis(100));
        left.put(id, format!("left-{id}"), every).await.unwrap();
        let every = EntryOptions::every(Duration::from_millis(150));
        right.put(id, format!("right-{id}"), every).await.unwrap();
    }

    left_log.sleep_until_ms(320).await;
    for id in 1..=3 {
        let performs = left_log.performs(id);
        let expected: Vec<(u64, String)> = [100, 200, 300]
            .into_iter()
            .map(|at| (at, format!("left-{id}")))
            .collect();
        assert_eq!(
            performs, expected,
            "performs of entry {id} in the first manager"
        );
        let performs = right_log.performs(id);
        let expected: Vec<(u64, String)> = [150, 300]
            .into_iter()
            .map(|at| (at, format!("right-{id}")))
            .collect();
        assert_eq!(
            performs, expected,
            "performs of entry {id} in the second manager"
        );
    }

    let reply = left.call(&1, ()).await;
    assert_eq!(reply, Ok("left-1".to_string()), "call in the first manager");
    let reply = right.call(&1, ()).await;
    assert_eq!(
        reply,
        Ok("right-1".to_string()),
        "call in the second manager"
    );

    let existed = left.del(&2).await.unwrap();
    assert!(existed, "del of entry 2 in the first manager");
    let untouched = right
        .get(&2)
        .await
        .unwrap()
        .expect("entry 2 of the second manager");
    assert_eq!(
        untouched.payload, "right-2",
        "the other manager's entry 2 is untouched"
    );
    assert_eq!(left.len(), 2, "entries in the first manager");
    assert_eq!(right.len(), 3, "entries in the second manager");

    let report = left.shutdown(Duration::from_secs(1)).await;
    assert_eq!(
        report.terminated, 2,
        "terminated by the first shutdown: {report:?}"
    );
    assert_eq!(left.state(), State::Stopped, "state of the stopped manager");
    assert_eq!(right.state(), State::Ready, "state of the other manager");

    right_log.sleep_until_ms(620).await;
    let later = right_log.perform_ms(3);
    assert_eq!(
        later,
        vec![150, 300, 450, 600],
        "the second manager keeps performing after the first stopped"
    );
    let shutdowns = right_log.terminates(3);
    assert!(
        shutdowns.is_empty(),
        "the other manager's entries terminated: {shutdowns:?}"
    );
}
