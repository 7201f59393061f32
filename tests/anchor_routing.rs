//! Routed calls: `call_routed` sends a request to the entry that owns a
//! routing key on a consistent-hash ring over the current ids. The same key
//! keeps its entry while the ids stay the same, and adding or removing one
//! id moves few keys. Paused clock.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Log, Recorder, Step};
use keywheel::{EntryOptions, Error, Manager, Outcome};

const MEMBERS: u64 = 10;
const KEYS: u64 = 10_000;

/// Returns a routing manager whose entries 0..`MEMBERS` only serve calls;
/// a call replies the payload `member-{id}`.
async fn pool(log: &Log) -> Manager<Recorder> {
    let manager = Manager::builder(Recorder::new(log))
        .routing(true)
        .build()
        .unwrap();
    for id in 0..MEMBERS {
        manager
            .put(id, format!("member-{id}"), EntryOptions::never())
            .await
            .unwrap();
    }
    manager
}

/// Returns the owner of every routing key in `0..KEYS`.
fn owners(manager: &Manager<Recorder>) -> Vec<u64> {
    (0..KEYS)
        .map(|key| {
            manager
                .route(&format!("key-{key}"))
                .unwrap_or_else(|| panic!("key-{key} has no owner"))
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn routed_key_reaches_same_entry() {
    let log = Log::new();
    let manager = pool(&log).await;

    let mut keys_per_member: BTreeMap<u64, usize> = BTreeMap::new();
    for key in 0..1_000 {
        let key = format!("key-{key}");
        let first = manager.call_routed(&key, ()).await;
        let second = manager.call_routed(&key, ()).await;
        let first = first.unwrap_or_else(|error| panic!("routed call for {key} failed: {error}"));
        assert_eq!(second, Ok(first.clone()), "second routed call for {key}");

        let owner = manager.route(&key).expect("a pool with members routes");
        assert_eq!(
            first,
            format!("member-{owner}"),
            "{key} was answered by its owner"
        );
        *keys_per_member.entry(owner).or_default() += 1;
    }

    assert_eq!(
        keys_per_member.len(),
        MEMBERS as usize,
        "members that own keys: {keys_per_member:?}"
    );
    let busiest = keys_per_member.values().copied().max().unwrap_or(0);
    assert!(
        busiest <= 200,
        "the busiest member owns {busiest} of 1000 keys, over twice its share: {keys_per_member:?}"
    );
}

/// Adding an id moves about 1/11 of the keys, all of them to the new id.
/// Removing it gives every key its old owner back. Removing another id
/// moves only that id's keys.
#[tokio::test(start_paused = true)]
async fn adding_or_removing_id_moves_few_keys() {
    let log = Log::new();
    let manager = pool(&log).await;
    let before = owners(&manager);

    manager
        .put(MEMBERS, "newcomer".into(), EntryOptions::never())
        .await
        .unwrap();
    let with_newcomer = owners(&manager);
    let moved: Vec<(u64, u64)> = before
        .iter()
        .zip(&with_newcomer)
        .filter(|(old, new)| old != new)
        .map(|(old, new)| (*old, *new))
        .collect();
    let elsewhere: Vec<&(u64, u64)> = moved.iter().filter(|(_, new)| *new != MEMBERS).collect();
    assert!(
        elsewhere.is_empty(),
        "keys moved between old members: {:?}",
        &elsewhere[..elsewhere.len().min(5)]
    );
    let share = KEYS as usize / (MEMBERS as usize + 1);
    assert!(
        (share / 2..=share * 2).contains(&moved.len()),
        "{} of {KEYS} keys moved to the new member, expected about {share}",
        moved.len()
    );
    let reply = manager.call_routed(&"key-probe".to_string(), ()).await;
    let owner = manager.route(&"key-probe".to_string()).unwrap();
    let expected = if owner == MEMBERS {
        "newcomer".to_string()
    } else {
        format!("member-{owner}")
    };
    assert_eq!(reply, Ok(expected), "a routed call reaches the key's owner");

    let existed = manager.del(&MEMBERS).await.unwrap();
    assert!(existed, "del of the new member");
    let after_del = owners(&manager);
    assert!(
        after_del == before,
        "removing the new member did not restore every owner"
    );

    let existed = manager.del(&3).await.unwrap();
    assert!(existed, "del of member 3");
    let without_three = owners(&manager);
    for (key, (old, new)) in before.iter().zip(&without_three).enumerate() {
        if *old == 3 {
            assert_ne!(*new, 3, "key-{key} still routes to the deleted member");
        } else {
            assert_eq!(new, old, "key-{key} moved though its owner stayed");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn routing_off_or_empty_is_error() {
    let log = Log::new();
    let plain = Manager::builder(Recorder::new(&log)).build().unwrap();
    plain
        .put(1, "p".into(), EntryOptions::never())
        .await
        .unwrap();
    let off = plain.call_routed(&"key".to_string(), ()).await;
    assert_eq!(off, Err(Error::RoutingOff), "routed call without routing");
    assert_eq!(
        plain.route(&"key".to_string()),
        None,
        "route without routing"
    );
    let message = Error::RoutingOff.to_string();
    assert!(
        message.contains("ManagerBuilder::routing(true)"),
        "the error says how to turn routing on: {message}"
    );

    let empty = Manager::builder(Recorder::new(&log))
        .routing(true)
        .build()
        .unwrap();
    let none = empty.call_routed(&"key".to_string(), ()).await;
    assert_eq!(none, Err(Error::NoRoute), "routed call with no entries");
}

/// An entry replaced by `put` is still the same id, so it keeps its keys.
#[tokio::test(start_paused = true)]
async fn replacing_put_keeps_routes() {
    let log = Log::new();
    let manager = pool(&log).await;
    let before = owners(&manager);

    manager
        .put(3, "member-3-again".into(), EntryOptions::never())
        .await
        .unwrap();
    let after = owners(&manager);
    let changed = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    assert_eq!(
        changed, 0,
        "keys that changed owner after re-putting member 3"
    );

    let key = (0..KEYS)
        .map(|key| format!("key-{key}"))
        .find(|key| manager.route(key) == Some(3))
        .expect("member 3 owns a key");
    let reply = manager.call_routed(&key, ()).await;
    assert_eq!(
        reply,
        Ok("member-3-again".to_string()),
        "{key} reaches the replacing entry"
    );
}

/// Outcomes change the ring too: a halted id leaves it, and a moved entry
/// takes its keys to the new id's place.
#[tokio::test(start_paused = true)]
async fn halt_and_move_update_routes() {
    let log = Log::new();
    let recorder = Recorder::new(&log).call(|id, _| match id {
        2 => Step::then(Outcome::Halt),
        5 => Step::then(Outcome::Move(50)),
        _ => Step::done(),
    });
    let manager = Manager::builder(recorder).routing(true).build().unwrap();
    for id in 0..MEMBERS {
        manager
            .put(id, format!("member-{id}"), EntryOptions::never())
            .await
            .unwrap();
    }

    manager.call(&2, ()).await.unwrap();
    manager.call(&5, ()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;

    let routed = owners(&manager);
    let stale: Vec<u64> = routed
        .iter()
        .copied()
        .filter(|owner| *owner == 2 || *owner == 5)
        .collect();
    assert!(
        stale.is_empty(),
        "{} keys still route to the halted or moved id",
        stale.len()
    );
    let to_new = routed.iter().filter(|owner| **owner == 50).count();
    assert!(to_new > 0, "no key routes to the moved entry's new id 50");

    let key = (0..KEYS)
        .map(|key| format!("key-{key}"))
        .find(|key| manager.route(key) == Some(50))
        .expect("id 50 owns a key");
    let reply = manager.call_routed(&key, ()).await;
    assert_eq!(
        reply,
        Ok("member-5".to_string()),
        "{key} reaches the moved payload under id 50"
    );
}
