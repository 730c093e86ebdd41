//! A real S3 protocol server (s3s + s3s-fs) over real TLS on 127.0.0.1,
//! started inside the test process with a CA and certificate made at start.
//! coffer (the child process) reaches it through the standard AWS variables.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const ACCESS_KEY: &str = "coffer-test-access";
pub const SECRET_KEY: &str = "coffer-test-secret-key-0123456789";

/// A CA made at test start, and a certificate it signed for 127.0.0.1 and
/// localhost, written as PEM files into a folder.
pub struct TestCerts {
    pub ca_pem: PathBuf,
    pub leaf_pem: PathBuf,
    pub key_pem: PathBuf,
    pub leaf_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

impl TestCerts {
    pub fn new(dir: &Path) -> TestCerts {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "coffer test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf_params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf_params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        let certs = TestCerts {
            ca_pem: dir.join("test-ca.pem"),
            leaf_pem: dir.join("test-server.pem"),
            key_pem: dir.join("test-server.key"),
            leaf_der: leaf.der().to_vec(),
            key_der: leaf_key.serialize_der(),
        };
        std::fs::write(&certs.ca_pem, ca_cert.pem()).unwrap();
        std::fs::write(&certs.leaf_pem, leaf.pem()).unwrap();
        std::fs::write(&certs.key_pem, leaf_key.serialize_pem()).unwrap();
        certs
    }
}

pub struct S3Server {
    pub addr: SocketAddr,
    /// Where s3s-fs keeps objects: `<root>/<bucket>/<key>`.
    pub root: PathBuf,
    /// The test CA (PEM) that signed the server certificate.
    pub ca_pem: PathBuf,
    /// Requests served so far (benchmarks report requests per GiB).
    pub requests: Arc<std::sync::atomic::AtomicU64>,
    /// Response body bytes sent so far (benchmarks report bytes fetched).
    #[allow(dead_code)] // read by examples/s3_server.rs, not by the tests
    pub bytes_out: Arc<std::sync::atomic::AtomicU64>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl S3Server {
    /// Starts a server storing under `dir/s3`, with the CA file in `dir`.
    pub fn start(dir: &Path) -> S3Server {
        let root = dir.join("s3");
        std::fs::create_dir_all(&root).unwrap();

        let certs = TestCerts::new(dir);
        let ca_pem = certs.ca_pem.clone();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(certs.leaf_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certs.key_der.clone())),
            )
            .unwrap();
        // HTTP/1.1 only: with h2, error responses to HEAD carry a body and the
        // client aborts the stream (shared/notes/s3-testing.md).
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let fs = s3s_fs::FileSystem::new(&root).unwrap();
        let served = root.clone();
        let mut b = s3s::service::S3ServiceBuilder::new(fs);
        b.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = b.build();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let bytes_out = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = requests.clone();
        let sent = bytes_out.clone();
        let log = std::env::var_os("S3_SERVER_LOG").is_some();
        let t0 = std::time::Instant::now();
        runtime.spawn(async move {
            let http =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                // As real S3 servers (and Go's, MinIO's) do: without it a
                // response written in two parts waits ~40 ms for the
                // client's delayed ACK (Nagle), for every client alike.
                let _ = socket.set_nodelay(true);
                let (acceptor, service, http) = (acceptor.clone(), service.clone(), http.clone());
                let (counter, sent) = (counter.clone(), sent.clone());
                let root = root.clone();
                tokio::spawn(async move {
                    // A client that rejects our certificate ends here: fine.
                    let Ok(stream) = acceptor.accept(socket).await else {
                        return;
                    };
                    let counted = hyper::service::service_fn(move |req| {
                        use http_body_util::BodyExt;
                        use std::sync::atomic::Ordering::Relaxed;
                        counter.fetch_add(1, Relaxed);
                        // S3_SERVER_LOG=1: one line a request, for seeing what a command asks.
                        if log {
                            let range = req.headers().get("range").and_then(|v| v.to_str().ok());
                            eprintln!(
                                "{:>10.3} ms {} {} {}",
                                t0.elapsed().as_secs_f64() * 1e3,
                                req.method(),
                                req.uri(),
                                range.unwrap_or("")
                            );
                        }
                        let sent = sent.clone();
                        let object = object_file(&root, &req);
                        let resp = hyper::service::Service::call(&service, req);
                        async move {
                            let resp = match resp.await {
                                Ok(r) => Ok(read_at_once(r, object).await),
                                e => e,
                            };
                            // Count body bytes as they go out, listings included.
                            resp.map(|r| {
                                r.map(|body| {
                                    body.map_frame(move |f| {
                                        if let Some(d) = f.data_ref() {
                                            sent.fetch_add(d.len() as u64, Relaxed);
                                        }
                                        f
                                    })
                                })
                            })
                        }
                    });
                    let _ = http
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), counted)
                        .await;
                });
            }
        });
        S3Server {
            addr,
            root: served,
            ca_pem,
            requests,
            bytes_out,
            runtime: Some(runtime),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// Creates a bucket (a folder, for s3s-fs).
    pub fn create_bucket(&self, name: &str) {
        std::fs::create_dir_all(self.root.join(name)).unwrap();
    }

    /// The environment a coffer child needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint().into()),
            ("AWS_CA_BUNDLE", self.ca_pem.clone().into()),
            // No instance-metadata probing in tests.
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }
}

/// The file behind a GetObject request (path-style `/bucket/key`, no query
/// but the SDK's `x-id`), if the request is one.
fn object_file<B>(root: &Path, req: &hyper::Request<B>) -> Option<PathBuf> {
    let (uri, path) = (req.uri(), req.uri().path());
    let get_object = req.method() == hyper::Method::GET
        && uri.query().is_none_or(|q| q == "x-id=GetObject")
        && !path.contains(['%', '+'])
        && !path.contains("..");
    let (bucket, key) = path.strip_prefix('/')?.split_once('/')?;
    (get_object && !bucket.is_empty() && !key.is_empty()).then(|| root.join(bucket).join(key))
}

/// s3s-fs streams an object 4 KiB at a time through tokio's blocking pool: a
/// 4 MiB ranged GET is a thousand thread hand-offs, and in a full restore
/// about 40 % of the server's CPU went to switching threads, on the two cores
/// the client under test needs too (a provider's servers are not on the
/// client's machine). A successful GET of an object is answered from one read
/// of the same bytes instead; anything else is left as s3s-fs made it.
async fn read_at_once(
    resp: hyper::Response<s3s::Body>,
    file: Option<PathBuf>,
) -> hyper::Response<s3s::Body> {
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
    };
    let length: Option<u64> = header("content-length").and_then(|v| v.parse().ok());
    // "bytes FIRST-LAST/TOTAL" for a ranged read.
    let start: u64 = header("content-range")
        .and_then(|v| v.strip_prefix("bytes ")?.split('-').next()?.parse().ok())
        .unwrap_or(0);
    let (Some(file), Some(length), true) = (file, length, resp.status().is_success()) else {
        return resp;
    };
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Seek};
        let mut f = std::fs::File::open(file)?;
        f.seek(std::io::SeekFrom::Start(start))?;
        let mut data = vec![0; usize::try_from(length).unwrap_or(0)];
        f.read_exact(&mut data)?;
        Ok(data)
    })
    .await;
    match read {
        Ok(Ok(data)) => {
            let (parts, _) = resp.into_parts();
            hyper::Response::from_parts(parts, s3s::Body::from(bytes::Bytes::from(data)))
        }
        _ => resp,
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
