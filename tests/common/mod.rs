//! A recording handler and helpers shared by the engine tests.
//!
//! [`Recorder`] logs every callback (time since the log was created, id,
//! payload, event) into a [`Log`]. Tests script what each callback does with
//! closures that return a [`Step`]. Payloads are strings, so a test can read
//! from the log which value a callback saw.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of these helpers"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keywheel::{Handler, Id as _, Outcome, TerminateReason};
use tokio::time::Instant;

/// The id type of every test manager.
pub type Id = u64;

/// What a callback or the test itself did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Init,
    /// A perform started. The record's payload is the one the perform received.
    Perform,
    /// A perform finished its work. The record's payload is the one it leaves.
    PerformEnd,
    Call,
    CallEnd,
    /// A cast started with this message.
    Cast(String),
    CastEnd,
    Terminate(TerminateReason),
    /// A point the test marks, such as the return of a `del`.
    Mark(&'static str),
}

impl Event {
    /// Returns true for the start of a callback that owns the payload. `init`
    /// runs inside the callback that follows it, so it does not count.
    fn starts_callback(&self) -> bool {
        matches!(self, Event::Perform | Event::Call | Event::Cast(_))
    }

    fn ends_callback(&self) -> bool {
        matches!(self, Event::PerformEnd | Event::CallEnd | Event::CastEnd)
    }
}

/// One logged event.
#[derive(Debug, Clone)]
pub struct Record {
    /// Time since the log was created.
    pub at: Duration,
    pub id: Id,
    pub payload: String,
    pub event: Event,
}

/// A shared, append-only event log with its own time origin.
#[derive(Clone)]
pub struct Log {
    start: Instant,
    records: Arc<Mutex<Vec<Record>>>,
}

impl Default for Log {
    fn default() -> Self {
        Log::new()
    }
}

impl Log {
    /// Creates an empty log whose time origin is now.
    pub fn new() -> Self {
        Log {
            start: Instant::now(),
            records: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Returns the time origin of the log.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Returns the time since the origin.
    pub fn elapsed(&self) -> Duration {
        Instant::now() - self.start
    }

    /// Returns the instant `millis` after the origin.
    pub fn at_ms(&self, millis: u64) -> Instant {
        self.start + Duration::from_millis(millis)
    }

    /// Sleeps until `millis` after the origin.
    pub async fn sleep_until_ms(&self, millis: u64) {
        tokio::time::sleep_until(self.at_ms(millis)).await;
    }

    pub fn push(&self, id: Id, payload: &str, event: Event) {
        let record = Record {
            at: self.elapsed(),
            id,
            payload: payload.to_string(),
            event,
        };
        self.lock().push(record);
    }

    /// Logs a test-side point in time, ordered with the callbacks' events.
    pub fn mark(&self, id: Id, label: &'static str) {
        self.push(id, "", Event::Mark(label));
    }

    pub fn records(&self) -> Vec<Record> {
        self.lock().clone()
    }

    /// Returns the records of one id, in log order.
    pub fn of(&self, id: Id) -> Vec<Record> {
        self.lock().iter().filter(|r| r.id == id).cloned().collect()
    }

    /// Returns the start times of the performs of `id`, in whole milliseconds.
    pub fn perform_ms(&self, id: Id) -> Vec<u64> {
        self.times_ms(id, |event| *event == Event::Perform)
    }

    /// Returns the start times and received payloads of the performs of `id`.
    pub fn performs(&self, id: Id) -> Vec<(u64, String)> {
        self.of(id)
            .into_iter()
            .filter(|r| r.event == Event::Perform)
            .map(|r| (whole_ms(r.at), r.payload))
            .collect()
    }

    /// Returns the start times of the performs of `id`, exact.
    pub fn perform_times(&self, id: Id) -> Vec<Duration> {
        self.of(id)
            .into_iter()
            .filter(|r| r.event == Event::Perform)
            .map(|r| r.at)
            .collect()
    }

    /// Returns (start, end) of every finished perform of `id`.
    pub fn perform_spans(&self, id: Id) -> Vec<(Duration, Duration)> {
        let mut spans = Vec::new();
        let mut open = None;
        for record in self.of(id) {
            match record.event {
                Event::Perform => open = Some(record.at),
                Event::PerformEnd => {
                    if let Some(start) = open.take() {
                        spans.push((start, record.at));
                    }
                }
                _ => {}
            }
        }
        spans
    }

    /// Returns the times of the events of `id` that match, in whole milliseconds.
    pub fn times_ms(&self, id: Id, matches: impl Fn(&Event) -> bool) -> Vec<u64> {
        self.of(id)
            .into_iter()
            .filter(|r| matches(&r.event))
            .map(|r| whole_ms(r.at))
            .collect()
    }

    /// Returns how many events of `id` match.
    pub fn count(&self, id: Id, matches: impl Fn(&Event) -> bool) -> usize {
        self.lock()
            .iter()
            .filter(|r| r.id == id && matches(&r.event))
            .count()
    }

    /// Returns every `terminate` of `id` as (reason, payload).
    pub fn terminates(&self, id: Id) -> Vec<(TerminateReason, String)> {
        self.of(id)
            .into_iter()
            .filter_map(|r| match r.event {
                Event::Terminate(reason) => Some((reason, r.payload)),
                _ => None,
            })
            .collect()
    }

    /// Returns the largest number of callbacks of `id` that were running at
    /// the same time, from the start and end events.
    pub fn max_concurrent(&self, id: Id) -> usize {
        let mut running = 0usize;
        let mut max = 0;
        for record in self.of(id) {
            if record.event.starts_callback() {
                running += 1;
                max = max.max(running);
            } else if record.event.ends_callback() {
                running = running.saturating_sub(1);
            }
        }
        max
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Record>> {
        self.records
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Rounds a duration down to whole milliseconds.
pub fn whole_ms(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

/// What a scripted callback does after it has logged its start and run its
/// closure: wait, then panic or return an outcome.
#[derive(Debug, Clone)]
pub struct Step {
    pub work: Duration,
    pub outcome: Outcome<Id>,
    pub panic: Option<String>,
}

impl Step {
    /// Returns `Continue` at once.
    pub fn done() -> Step {
        Step {
            work: Duration::ZERO,
            outcome: Outcome::Continue,
            panic: None,
        }
    }

    /// Returns `outcome` at once.
    pub fn then(outcome: Outcome<Id>) -> Step {
        Step {
            outcome,
            ..Step::done()
        }
    }

    /// Sleeps for `work`, then returns `Continue`.
    pub fn sleep(work: Duration) -> Step {
        Step {
            work,
            ..Step::done()
        }
    }

    /// Panics with `message` (after the work, if any).
    pub fn panic(message: &str) -> Step {
        Step {
            panic: Some(message.to_string()),
            ..Step::done()
        }
    }

    /// Sets the outcome.
    pub fn with_outcome(mut self, outcome: Outcome<Id>) -> Step {
        self.outcome = outcome;
        self
    }

    async fn run(self, log: &Log, id: Id, payload: &str, end: Event) -> Outcome<Id> {
        if !self.work.is_zero() {
            tokio::time::sleep(self.work).await;
        }
        log.push(id, payload, end);
        if let Some(message) = self.panic {
            panic!("{message}");
        }
        self.outcome
    }
}

type Script = Arc<dyn Fn(Id, &mut String) -> Step + Send + Sync>;
type InitScript = Arc<dyn Fn(Id, String) -> String + Send + Sync>;

/// A handler that logs every callback and runs scripted behaviour.
///
/// By default `perform` and `call` continue at once, `cast` appends `+message`
/// to the payload, `init` returns the payload unchanged and `terminate` only
/// logs. A `call` replies with the payload as the call left it.
pub struct Recorder {
    log: Log,
    perform: Script,
    call: Script,
    cast: Script,
    init: InitScript,
    terminate_panics: bool,
}

impl Recorder {
    pub fn new(log: &Log) -> Self {
        Recorder {
            log: log.clone(),
            perform: Arc::new(|_, _| Step::done()),
            call: Arc::new(|_, _| Step::done()),
            cast: Arc::new(|_, _| Step::done()),
            init: Arc::new(|_, payload| payload),
            terminate_panics: false,
        }
    }

    pub fn perform(
        mut self,
        script: impl Fn(Id, &mut String) -> Step + Send + Sync + 'static,
    ) -> Self {
        self.perform = Arc::new(script);
        self
    }

    pub fn call(
        mut self,
        script: impl Fn(Id, &mut String) -> Step + Send + Sync + 'static,
    ) -> Self {
        self.call = Arc::new(script);
        self
    }

    /// Sets what a cast does after its message was appended to the payload.
    pub fn cast(
        mut self,
        script: impl Fn(Id, &mut String) -> Step + Send + Sync + 'static,
    ) -> Self {
        self.cast = Arc::new(script);
        self
    }

    pub fn init(mut self, script: impl Fn(Id, String) -> String + Send + Sync + 'static) -> Self {
        self.init = Arc::new(script);
        self
    }

    /// Makes `terminate` panic after it has logged.
    pub fn terminate_panics(mut self) -> Self {
        self.terminate_panics = true;
        self
    }
}

impl Handler for Recorder {
    type Id = Id;
    type Payload = String;
    type Request = ();
    type Reply = String;
    type Message = String;

    async fn perform(&self, id: &Id, payload: &mut String) -> Outcome<Id> {
        self.log.push(*id, payload, Event::Perform);
        let step = (self.perform)(*id, payload);
        step.run(&self.log, *id, payload, Event::PerformEnd).await
    }

    async fn call(&self, id: &Id, payload: &mut String, _request: ()) -> (String, Outcome<Id>) {
        self.log.push(*id, payload, Event::Call);
        let step = (self.call)(*id, payload);
        let outcome = step.run(&self.log, *id, payload, Event::CallEnd).await;
        (payload.clone(), outcome)
    }

    async fn cast(&self, id: &Id, payload: &mut String, message: String) -> Outcome<Id> {
        self.log.push(*id, payload, Event::Cast(message.clone()));
        payload.push('+');
        payload.push_str(&message);
        let step = (self.cast)(*id, payload);
        step.run(&self.log, *id, payload, Event::CastEnd).await
    }

    async fn init(&self, id: &Id, payload: String) -> String {
        self.log.push(*id, &payload, Event::Init);
        (self.init)(*id, payload)
    }

    async fn terminate(&self, id: &Id, payload: String, reason: TerminateReason) {
        self.log.push(*id, &payload, Event::Terminate(reason));
        if self.terminate_panics {
            panic!("terminate of {id} failed on purpose");
        }
    }
}

/// Returns the first `count` ids, counting up from 0, whose shard is `shard`
/// in a manager with `shards` shards.
pub fn ids_on_shard(shard: u64, shards: u64, count: usize) -> Vec<Id> {
    (0u64..)
        .filter(|id| id.stable_hash() % shards == shard)
        .take(count)
        .collect()
}

/// Lets every task that is ready run, without moving the paused clock.
pub async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}
