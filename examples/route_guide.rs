//! gRPC's RouteGuide, written the way its own examples write it, diagnosed by holdup's engine
//! with the README's three lines: a service nobody here wrote, with one RPC of each kind.
//!
//! - `GetFeature` (unary): a lookup in memory.
//! - `ListFeatures` (server-streaming): one feature per 50 ms, as a paced database cursor sends
//!   them (`tokio::time::sleep` between them).
//! - `RecordRoute` (client-streaming): reads the client's points as they come.
//! - `RouteChat` (bidirectional): answers each note with the notes seen at its location.
//!
//! A call that goes on after its response head (every stream) says `partial=head` in its
//! `holdup-diagnosis` header, and the whole call's diagnosis comes in the trailer:
//!
//! ```sh
//! cargo run --example route_guide -- --listen 127.0.0.1:50062
//! grpcurl -plaintext -v -d '{"lo":{"latitude":0,"longitude":0},"hi":{"latitude":10,"longitude":10}}' \
//!     127.0.0.1:50062 routeguide.RouteGuide/ListFeatures
//! ```
#![forbid(unsafe_code)]

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use holdup::diagnose::DiagnoseLayer;
use tokio::{net::TcpListener, sync::mpsc};
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming, transport::Server};

pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("routeguide");
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("routeguide_descriptor");
}

use pb::{
    Feature, Point, Rectangle, RouteNote, RouteSummary,
    route_guide_server::{RouteGuide, RouteGuideServer},
};

/// How long `ListFeatures` waits before each feature it sends.
pub const CURSOR_PACE: Duration = Duration::from_millis(50);

/// A small fixed map: features on a 10 x 10 grid of whole degrees (in 1e-7 degrees).
fn features() -> Vec<Feature> {
    (0..100)
        .map(|i| Feature {
            name: format!("feature {i}"),
            location: Some(Point {
                latitude: (i / 10) * 10_000_000,
                longitude: (i % 10) * 10_000_000,
            }),
        })
        .collect()
}

fn in_range(point: &Point, rect: &Rectangle) -> bool {
    let (lo, hi) = (rect.lo.unwrap_or_default(), rect.hi.unwrap_or_default());
    let (left, right) = (
        lo.longitude.min(hi.longitude),
        lo.longitude.max(hi.longitude),
    );
    let (bottom, top) = (lo.latitude.min(hi.latitude), lo.latitude.max(hi.latitude));
    (left..=right).contains(&point.longitude) && (bottom..=top).contains(&point.latitude)
}

/// The notes left at each location (latitude, longitude).
type Notes = HashMap<(i32, i32), Vec<RouteNote>>;

#[derive(Debug, Clone)]
pub struct RouteGuideService {
    features: Arc<Vec<Feature>>,
    notes: Arc<Mutex<Notes>>,
}

impl Default for RouteGuideService {
    fn default() -> Self {
        Self {
            features: Arc::new(features()),
            notes: Arc::default(),
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl RouteGuide for RouteGuideService {
    async fn get_feature(&self, request: Request<Point>) -> Result<Response<Feature>, Status> {
        let point = request.into_inner();
        let found = self
            .features
            .iter()
            .find(|f| f.location.as_ref() == Some(&point))
            .cloned()
            .unwrap_or(Feature {
                name: String::new(),
                location: Some(point),
            });
        Ok(Response::new(found))
    }

    type ListFeaturesStream = ReceiverStream<Result<Feature, Status>>;

    async fn list_features(
        &self,
        request: Request<Rectangle>,
    ) -> Result<Response<Self::ListFeaturesStream>, Status> {
        let rect = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let features = Arc::clone(&self.features);
        tokio::spawn(async move {
            for feature in features.iter() {
                if feature
                    .location
                    .as_ref()
                    .is_some_and(|p| in_range(p, &rect))
                {
                    tokio::time::sleep(CURSOR_PACE).await;
                    if tx.send(Ok(feature.clone())).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn record_route(
        &self,
        request: Request<Streaming<Point>>,
    ) -> Result<Response<RouteSummary>, Status> {
        let mut points = request.into_inner();
        let started = Instant::now();
        let mut summary = RouteSummary::default();
        while let Some(point) = points.next().await {
            let point = point?;
            summary.point_count += 1;
            if self
                .features
                .iter()
                .any(|f| f.location.as_ref() == Some(&point))
            {
                summary.feature_count += 1;
            }
        }
        summary.elapsed_time = i32::try_from(started.elapsed().as_secs()).unwrap_or(i32::MAX);
        Ok(Response::new(summary))
    }

    type RouteChatStream = BoxStream<RouteNote>;

    async fn route_chat(
        &self,
        request: Request<Streaming<RouteNote>>,
    ) -> Result<Response<Self::RouteChatStream>, Status> {
        let mut incoming = request.into_inner();
        let notes = Arc::clone(&self.notes);
        let output = async_stream(move |tx| async move {
            while let Some(note) = incoming.next().await {
                let note = match note {
                    Ok(note) => note,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                let at = note.location.unwrap_or_default();
                let seen = {
                    let mut notes = notes.lock().unwrap_or_else(PoisonError::into_inner);
                    let here = notes.entry((at.latitude, at.longitude)).or_default();
                    here.push(note);
                    here.clone()
                };
                for note in seen {
                    if tx.send(Ok(note)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(output)))
    }
}

/// A stream fed by `body` through a channel, as services without `async-stream` write one.
fn async_stream<T, F, Fut>(body: F) -> ReceiverStream<Result<T, Status>>
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(body(tx));
    ReceiverStream::new(rx)
}

/// Serves RouteGuide (and reflection, for grpcurl) on `listener` until `shutdown`, diagnosed.
///
/// # Errors
/// The transport error that stopped the server.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
    };
    Server::builder()
        .layer(DiagnoseLayer::new())
        .add_service(reflection().build_v1().context("building reflection")?)
        .add_service(
            reflection()
                .build_v1alpha()
                .context("building reflection")?,
        )
        .add_service(RouteGuideServer::new(RouteGuideService::default()))
        // Kernel receive stamps on tonic's own server: a call that waited behind a held worker
        // before its task ran is seen (`arrival=kernel`), not read as `none`.
        .serve_with_incoming_shutdown(
            holdup_diagnose::arrival::incoming(listener).context("receive timestamps")?,
            shutdown,
        )
        .await
        .context("serving")
}

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:50062")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    println!("route guide listening on {}", listener.local_addr()?);
    serve(listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
