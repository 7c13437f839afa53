//! The diagnosis engine on a service that is not the Lab: `examples/diagnosed_greeter.rs`
//! (included here as it is, so the test runs the example's own server code), called through a
//! real tonic client. Verdicts come from measurement: the greeter's code names none.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use tonic::transport::Channel;

use crate::common::ms;

#[allow(dead_code)] // the example's `main` and flags are not used here
#[path = "../../examples/diagnosed_greeter.rs"]
mod example;

use example::pb::{HelloRequest, greeter_client::GreeterClient};

/// A running greeter on one runtime of 2 workers, which reads its sockets and runs its
/// handlers (the test's own client runs elsewhere, on the test's runtime).
struct Greeter {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Greeter {
    async fn start() -> Self {
        crate::common::init_tracing();
        let runtime = example::runtime("greeter", 2).expect("greeter runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            example::serve(listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("greeter serves");
        });
        Self {
            addr,
            stop: Some(stop),
            runtime: Some(runtime),
        }
    }

    async fn client(&self) -> GreeterClient<Channel> {
        GreeterClient::connect(format!("http://{}", self.addr))
            .await
            .expect("greeter answers")
    }
}

impl Drop for Greeter {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// One call's reply headers: the diagnosis as `key=value` pairs, and the trace id.
struct Said {
    diagnosis: HashMap<String, String>,
    trace_id: String,
}

impl Said {
    fn verdict(&self) -> &str {
        self.diagnosis.get("verdict").map_or("", String::as_str)
    }

    fn ms(&self, key: &str) -> f64 {
        self.diagnosis
            .get(key)
            .and_then(|v| v.trim_end_matches("ms").parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {:?}", self.diagnosis))
    }

    /// `(method, trace id)` of each culprit.
    fn culprits(&self) -> Vec<(String, String)> {
        self.diagnosis
            .get("culprits")
            .map(|list| {
                list.split(',')
                    // `+N`: culprits past the header's first four.
                    .filter(|c| !c.starts_with('+'))
                    .map(|c| {
                        let (who, _share) = c.rsplit_once('/').expect("culprit/share");
                        let (method, trace) = who.split_once('@').unwrap_or((who, ""));
                        (method.to_owned(), trace.to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

async fn say(client: &mut GreeterClient<Channel>, name: &str) -> Said {
    let response = client
        .say_hello(HelloRequest { name: name.into() })
        .await
        .unwrap_or_else(|s| panic!("SayHello({name}): {s}"));
    assert_eq!(response.get_ref().message, format!("Hello {name}!"));
    let header = |key| {
        response
            .metadata()
            .get(key)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {key} header"))
            .to_owned()
    };
    let diagnosis = header("holdup-diagnosis")
        .split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Said {
        diagnosis,
        trace_id: header("x-trace-id"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_misbehaviour_gets_its_measured_verdict() {
    let _serial = crate::common::serial().await;
    let greeter = Greeter::start().await;
    let mut client = greeter.client().await;

    let spin = say(&mut client, "spin").await;
    assert_eq!(spin.verdict(), "own-cpu", "{:?}", spin.diagnosis);
    let block = say(&mut client, "block").await;
    assert_eq!(block.verdict(), "blocking-call", "{:?}", block.diagnosis);
    assert!(block.ms("on_cpu") < 50.0, "{:?}", block.diagnosis);
    let wait = say(&mut client, "wait").await;
    // An awaited sleep in a span of the service's own with no kind: the timer is measured
    // (tokio's `Sleep`), the span names it.
    assert_eq!(wait.verdict(), "timer", "{:?}", wait.diagnosis);
    assert_eq!(
        wait.diagnosis.get("waited_in").map(String::as_str),
        Some("cache.refresh")
    );
    let plain = say(&mut client, "plain").await;
    assert!(plain.ms("total") < 50.0, "{:?}", plain.diagnosis);
    // Nothing of the greeter's held it up (other tests' servers in this process may have
    // held the CPUs, and would be named).
    assert!(
        plain
            .culprits()
            .iter()
            .all(|(method, _)| method != "SayHello"),
        "{:?}",
        plain.diagnosis
    );
    assert_eq!(plain.trace_id.len(), 32);

    // A second `mutex` call waits for the lock the first one holds, on its worker.
    let mut other = greeter.client().await;
    let holder = tokio::spawn(async move { say(&mut other, "mutex").await });
    tokio::time::sleep(ms(50)).await;
    let waiter = say(&mut client, "mutex").await;
    let holder = holder.await.expect("holder");
    assert_eq!(holder.verdict(), "blocking-call", "{:?}", holder.diagnosis);
    // The waiter waited for the lock on a worker (blocking-call), or first for a worker the
    // holder's blocked poll kept (runtime-contention: on one runtime its connection may sit
    // in the blocked worker's queue): never `none`, and the holder is named for the latter.
    assert!(
        ["blocking-call", "runtime-contention"].contains(&waiter.verdict()),
        "{:?}",
        waiter.diagnosis
    );
    assert!(
        waiter.ms("blocked") + waiter.ms("scheduled") >= 250.0,
        "{:?}",
        waiter.diagnosis
    );
    if waiter.ms("scheduled") >= 50.0 {
        assert!(
            waiter
                .culprits()
                .iter()
                .any(|(_, trace)| *trace == holder.trace_id),
            "the holder {} is named: {:?}",
            holder.trace_id,
            waiter.diagnosis
        );
    }
}

/// One worker of two blocked in a `std::thread::sleep`: a plain call on a fresh connection,
/// as grpcurl sends one. Whether it waits depends on where tokio queued its connection (the
/// blocked worker's LIFO slot or local queue cannot be stolen from); whatever its client
/// waited, its diagnosis must show, as time scheduled and blamed on the blocking call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_behind_one_blocked_worker_is_shown_and_blamed() {
    let _serial = crate::common::serial().await;
    let greeter = Greeter::start().await;
    let mut blocker_client = greeter.client().await;
    let blocker = tokio::spawn(async move { say(&mut blocker_client, "block").await });
    tokio::time::sleep(ms(30)).await;
    let sent = std::time::Instant::now();
    let mut client = greeter.client().await;
    let victim = say(&mut client, "plain").await;
    let waited = sent.elapsed().as_secs_f64() * 1e3;
    let blocker = blocker.await.expect("blocker");
    if shows_the_wait(&victim, waited) {
        assert!(
            victim
                .culprits()
                .iter()
                .any(|(_, trace)| *trace == blocker.trace_id),
            "the blocking call {} is named: {:?}",
            blocker.trace_id,
            victim.diagnosis
        );
    }
}

/// Whether the client's wait (`waited` ms, connect included) was a real one (50 ms or more);
/// if so the reply says `runtime-contention` and shows at least 80 % of it (less 10 ms for the
/// client's own work) as scheduled time, else it claims no more than the client saw.
#[track_caller]
fn shows_the_wait(victim: &Said, waited: f64) -> bool {
    if waited < 50.0 {
        assert!(victim.ms("total") <= waited, "{:?}", victim.diagnosis);
        return false;
    }
    assert_eq!(
        victim.verdict(),
        "runtime-contention",
        "the client waited {waited:.1} ms: {:?}",
        victim.diagnosis
    );
    assert!(
        victim.ms("scheduled") >= 0.8 * (waited - 10.0),
        "the client waited {waited:.1} ms: {:?}",
        victim.diagnosis
    );
    true
}

/// Two spins sent on connections of their own, then a plain call: on one runtime the spins
/// may hold both workers, or queue one behind the other (their connections on one worker).
/// Whatever the plain call's client waited, its diagnosis shows it as scheduled time and
/// blames the spins by trace id, and nothing else of the greeter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_behind_two_spins_blames_them_by_trace_id() {
    let _serial = crate::common::serial().await;
    let greeter = Greeter::start().await;
    let mut spins = Vec::new();
    for _ in 0..2 {
        let mut client = greeter.client().await;
        spins.push(tokio::spawn(async move { say(&mut client, "spin").await }));
    }
    tokio::time::sleep(ms(60)).await;
    let sent = std::time::Instant::now();
    let mut client = greeter.client().await;
    let victim = say(&mut client, "plain").await;
    let waited = sent.elapsed().as_secs_f64() * 1e3;
    let mut spun: Vec<String> = Vec::new();
    for spin in spins {
        spun.push(spin.await.expect("spin").trace_id);
    }
    let blamed: Vec<(String, String)> = victim
        .culprits()
        .into_iter()
        .filter(|(method, _)| method == "SayHello")
        .collect();
    assert!(
        blamed.iter().all(|(_, trace)| spun.contains(trace)),
        "only the spins {spun:?} are blamed: {:?}",
        victim.diagnosis
    );
    if shows_the_wait(&victim, waited) {
        assert!(!blamed.is_empty(), "{:?}", victim.diagnosis);
        assert!(
            Duration::from_secs_f64(victim.ms("scheduled") / 1e3) >= ms(40),
            "{:?}",
            victim.diagnosis
        );
    }
}
