//! Scratch experiments (to be trimmed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use keywheel::store::{FjallStore, Store, StoreError};
use keywheel::{
    EntryOptions, FirstRun, Handler, Id, JsonCodec, Manager, OpenError, Outcome, Persistence,
};

type Payload = (String, u64);

#[derive(Clone, Default)]
struct Probe {
    performs: Arc<AtomicU64>,
    manager: Arc<OnceLock<Manager<Probe>>>,
    move_to: Arc<OnceLock<u64>>,
}

impl Handler for Probe {
    type Id = u64;
    type Payload = Payload;
    type Request = ();
    type Reply = ();
    type Message = ();

    async fn perform(&self, _id: &u64, payload: &mut Payload) -> Outcome<u64> {
        self.performs.fetch_add(1, Ordering::Relaxed);
        payload.1 += 1;
        if let Some(&target) = self.move_to.get() {
            if payload.0 == "mover" {
                let manager = self.manager.get().unwrap().clone();
                tokio::spawn(async move {
                    manager
                        .put(
                            target,
                            ("user".to_string(), 0),
                            EntryOptions::every(Duration::from_secs(3600)),
                        )
                        .await
                        .unwrap();
                });
                return Outcome::Move(target);
            }
        }
        Outcome::Continue
    }
}

fn persistence(dir: &std::path::Path) -> Persistence<u64, Payload> {
    Persistence::new(FjallStore::open(dir).expect("the store opens"), JsonCodec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_then_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::builder(Probe::default())
        .persistence(persistence(dir.path()))
        .open()
        .await
        .unwrap();
    manager
        .put(1, ("a".into(), 0), EntryOptions::every(Duration::from_secs(3600)))
        .await
        .unwrap();
    drop(manager);
    let started = std::time::Instant::now();
    let result = FjallStore::open(dir.path());
    eprintln!(
        "reopen right after drop: {:?} after {:?}",
        result.as_ref().map(|_| ()).map_err(|e| e.to_string()),
        started.elapsed()
    );
}

#[tokio::test]
async fn move_races_a_put_of_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let handler = Probe::default();
    let manager = Manager::builder(handler.clone())
        .shards(2)
        .persistence(persistence(dir.path()))
        .open()
        .await
        .unwrap();
    let _ = handler.manager.set(manager.clone());
    let source: u64 = (1..).find(|id: &u64| id.stable_hash() % 2 == 0).unwrap();
    let target: u64 = (1..).find(|id: &u64| id.stable_hash() % 2 == 1).unwrap();
    let _ = handler.move_to.set(target);
    manager
        .put(
            source,
            ("mover".into(), 0),
            EntryOptions::every(Duration::from_secs(3600)).first_run(FirstRun::Immediately),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let live = manager.get(&target).await.unwrap().map(|s| s.payload);
    eprintln!("live target payload: {live:?}; source present: {}", manager.contains(&source).await.unwrap());
    manager.shutdown(Duration::from_secs(1)).await;
    drop(manager);
    let _ = handler.manager;

    let manager = Manager::builder(Probe::default())
        .shards(2)
        .persistence(persistence(dir.path()))
        .open()
        .await
        .unwrap();
    let stored = manager.get(&target).await.unwrap().map(|s| s.payload);
    eprintln!("stored target payload: {stored:?}");
    assert_eq!(live, stored, "the store matches what the manager served");
    manager.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_perform_with_perform_changes_off() {
    let dir = tempfile::tempdir().unwrap();
    let handler = Probe::default();
    let manager = Manager::builder(handler.clone())
        .persistence(persistence(dir.path()).perform_changes(false))
        .open()
        .await
        .unwrap();
    let once = EntryOptions::never().first_run(FirstRun::After(Duration::from_millis(50)));
    manager.put(1, ("once".into(), 0), once).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    eprintln!("performs before restart: {}", handler.performs.load(Ordering::Relaxed));
    manager.shutdown(Duration::from_secs(1)).await;

    let handler = Probe::default();
    let manager = Manager::builder(handler.clone())
        .persistence(persistence(dir.path()).perform_changes(false).recovery_spread(Duration::ZERO))
        .open()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    eprintln!("performs after restart: {}", handler.performs.load(Ordering::Relaxed));
    manager.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_journal_after_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::builder(Probe::default())
        .persistence(persistence(dir.path()))
        .open()
        .await
        .unwrap();
    for id in 0..50 {
        manager
            .put(id, ("a".into(), 0), EntryOptions::every(Duration::from_secs(3600)))
            .await
            .unwrap();
    }
    manager.shutdown(Duration::from_secs(1)).await;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "jnl") {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let result = FjallStore::open(dir.path());
    match result {
        Ok(mut store) => {
            let mut records = 0;
            store.scan(&mut |_, _| { records += 1; Ok(()) }).unwrap();
            eprintln!("opened; records visible: {records}");
        }
        Err(error) => eprintln!("refused: {error}"),
    }
    let _ = (OpenError::Config, StoreError::Locked { path: dir.path().into() });
}
