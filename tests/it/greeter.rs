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

/// A running greeter: handlers on a 2-worker runtime of their own, as the README advises.
struct Greeter {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handlers: Option<tokio::runtime::Runtime>,
}

impl Greeter {
    async fn start() -> Self {
        crate::common::init_tracing();
        let handlers = example::runtime("greeter-handler", 2).expect("handler runtime");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = handlers.handle().clone();
        tokio::spawn(async move {
            example::serve(listener, Some(handle), async {
                let _ = stopped.await;
            })
            .await
            .expect("greeter serves");
        });
        Self {
            addr,
            stop: Some(stop),
            handlers: Some(handlers),
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
        if let Some(handlers) = self.handlers.take() {
            handlers.shutdown_background();
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
    assert_eq!(wait.verdict(), "waiting", "{:?}", wait.diagnosis);
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
    for mutex in [&holder, &waiter] {
        assert_eq!(mutex.verdict(), "blocking-call", "{:?}", mutex.diagnosis);
    }
    assert!(waiter.ms("blocked") >= 250.0, "{:?}", waiter.diagnosis);
}

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
    let mut client = greeter.client().await;
    let victim = say(&mut client, "plain").await;
    let mut spun: Vec<String> = Vec::new();
    for spin in spins {
        spun.push(spin.await.expect("spin").trace_id);
    }
    assert_eq!(
        victim.verdict(),
        "runtime-contention",
        "{:?}",
        victim.diagnosis
    );
    assert!(
        Duration::from_secs_f64(victim.ms("scheduled") / 1e3) >= ms(50),
        "{:?}",
        victim.diagnosis
    );
    let mut blamed = victim.culprits();
    blamed.sort();
    spun.sort();
    let expected: Vec<(String, String)> = spun
        .into_iter()
        .map(|t| ("SayHello".to_owned(), t))
        .collect();
    assert_eq!(blamed, expected, "{:?}", victim.diagnosis);
}
