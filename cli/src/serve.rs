//! How `cdp up` serves HTTP, with the limits a server on an open port needs: a connection must send its
//! request's headers within a time (from connecting, and again while it idles between requests), its body
//! within another, and the open connections are capped below the process's file limit, so that idle or slow
//! sockets can never take the files the runner needs for its own work (the state, the lake, the outbox).
//! While the server is close to the cap, new connections get a shorter time for their headers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Semaphore, watch};
use tower_service::Service as _;

/// The serving limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Time for a request's headers, from connecting or from the end of the previous request.
    pub(crate) header_timeout: Duration,
    /// The same while the server holds more than three quarters of `max_connections`.
    pub(crate) busy_header_timeout: Duration,
    /// Time for a request's whole body.
    pub(crate) body_timeout: Duration,
    /// Connections open at once; more wait in the kernel's queue until one closes.
    pub(crate) max_connections: usize,
}

impl Limits {
    /// Limits for this process: the connection cap leaves an eighth of the open-file limit (at least 256
    /// files) to the runner's own work.
    pub(crate) fn for_this_process() -> Self {
        let files = open_file_limit().unwrap_or(1024);
        let headroom = (files / 8).max(256);
        Self {
            header_timeout: Duration::from_secs(10),
            busy_header_timeout: Duration::from_secs(2),
            body_timeout: Duration::from_secs(30),
            max_connections: files.saturating_sub(headroom).clamp(16, 16_384) as usize,
        }
    }
}

/// The soft limit on open files (`/proc/self/limits`, Linux); `None` elsewhere or when unlimited.
pub(crate) fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open requests finish (10 s at most).
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopped) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.map_err(std::io::Error::other)?,
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of files or another passing failure: wait instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let busy = permits.available_permits() < limits.max_connections / 4;
        let header_timeout = if busy { limits.busy_header_timeout } else { limits.header_timeout };
        let (app, mut stopped) = (app.clone(), stopped.clone());
        let body_timeout = limits.body_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let mut app = app.clone();
                let mut request = request.map(|body| Body::new(Deadline::new(body, body_timeout)));
                request.extensions_mut().insert(ConnectInfo(peer));
                async move { app.call(request).await }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stopped.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    let _ = stop.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(10), permits.acquire_many(all)).await;
    Ok(())
}

/// A request body that must arrive whole before a deadline: a client trickling its body cannot hold a
/// connection (and its file) for longer.
struct Deadline<B> {
    inner: B,
    sleep: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

impl<B> Deadline<B> {
    fn new(inner: B, timeout: Duration) -> Self {
        Self { inner, sleep: Box::pin(tokio::time::sleep(timeout)), timeout }
    }
}

impl<B> http_body::Body for Deadline<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.sleep.as_mut().poll(cx).is_ready() {
            let message = format!("the request body did not arrive within {} s", self.timeout.as_secs());
            return Poll::Ready(Some(Err(message.into())));
        }
        Pin::new(&mut self.inner).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::net::SocketAddr;

    use super::*;

    async fn start(limits: Limits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let app = Router::new()
            .route("/echo", axum::routing::post(|body: Bytes| async move { format!("{} bytes", body.len()) }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(serve(listener, app, limits, async move {
            let _ = rx.await;
        }));
        (addr, tx)
    }

    fn limits() -> Limits {
        Limits {
            header_timeout: Duration::from_millis(300),
            busy_header_timeout: Duration::from_millis(100),
            body_timeout: Duration::from_millis(500),
            max_connections: 4,
        }
    }

    /// Whether the server closed `stream` (EOF or reset) within `wait`.
    fn closed(mut stream: std::net::TcpStream, wait: Duration) -> bool {
        stream.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 256];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                    return false;
                }
                Err(_) => return true,
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_and_slow_connections_are_closed_and_the_cap_frees_itself() {
        let (addr, _stop) = start(limits()).await;
        let outcome = tokio::task::spawn_blocking(move || {
            // Idle sockets, more than the cap: each is closed after the header time, so the cap frees itself.
            let idle: Vec<_> = (0..8).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
            let closed_idle =
                idle.into_iter().filter(|s| closed(s.try_clone().unwrap(), Duration::from_secs(3))).count();
            // A body that trickles is cut at the body time.
            let mut slow = std::net::TcpStream::connect(addr).unwrap();
            slow.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nab").unwrap();
            let slow_cut = closed(slow, Duration::from_secs(3));
            // A real request is served.
            let mut good = std::net::TcpStream::connect(addr).unwrap();
            good.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc")
                .unwrap();
            let mut answer = String::new();
            good.read_to_string(&mut answer).unwrap();
            (closed_idle, slow_cut, answer)
        })
        .await
        .unwrap();
        assert_eq!(outcome.0, 8, "every idle socket was closed");
        assert!(outcome.1, "the trickling body was cut");
        assert!(outcome.2.starts_with("HTTP/1.1 200") && outcome.2.ends_with("3 bytes"), "{}", outcome.2);
    }

    #[test]
    fn the_cap_leaves_files_for_the_runner() {
        let limits = Limits::for_this_process();
        let files = open_file_limit().unwrap_or(1024);
        assert!(limits.max_connections as u64 <= files.saturating_sub(256).max(16));
    }
}
