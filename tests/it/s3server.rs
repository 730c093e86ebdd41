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
    /// While set, every PUT and POST (uploads, DeleteObjects) is refused
    /// with 403 AccessDenied, as for credentials without s3:PutObject.
    #[allow(dead_code)] // read by the tests, not by examples/s3_server.rs
    pub read_only: Arc<std::sync::atomic::AtomicBool>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// Behaviours of other S3 implementations that the test server imitates
/// on request, so coffer is tested against each (issue 14). All off by
/// default: the server then behaves as s3s-fs does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quirks {
    /// PutObject with `If-None-Match: *` succeeds and overwrites, as on
    /// Garage 2.5, s3rver and B2 (which answers 501 instead).
    pub ignore_if_none_match: bool,
    /// Every ranged GET (206) carries the whole object's CRC32 as
    /// `x-amz-checksum-crc32`, as Ceph before 2025-02 and R2 in 2025-02 did:
    /// the one the upload stored, or, when it stored none, one computed from
    /// the object (AWS keeps a checksum of every object since 2024-12).
    pub whole_object_checksum_on_ranges: bool,
    /// aws-chunked uploads with trailing checksums
    /// (`STREAMING-UNSIGNED-PAYLOAD-TRAILER`, `x-amz-trailer`) are refused
    /// with 411 MissingContentLength after their body is read, as Ceph 16
    /// does (OVH and Hetzner refused them in 2025 too).
    pub reject_trailing_checksums: bool,
    /// aws-chunked PutObject bodies are stored with their chunk framing
    /// (`100000\r\n…0\r\nx-amz-checksum-crc32:…`) as the object's bytes,
    /// and the upload answered 200, as s3rver 3 does: silent corruption.
    /// The stored checksums are dropped (s3rver returns none). Multipart
    /// parts are stored as sent by s3s (decoded).
    pub store_chunk_framing: bool,
}

impl S3Server {
    /// Starts a server storing under `dir/s3`, with the CA file in `dir`.
    pub fn start(dir: &Path) -> S3Server {
        Self::start_with(dir, Quirks::default())
    }

    /// [`S3Server::start`], imitating the given quirks.
    pub fn start_with(dir: &Path, quirks: Quirks) -> S3Server {
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
        b.set_route(PlainPut {
            root: root.clone(),
            seq: std::sync::atomic::AtomicU64::new(0),
            quirks,
        });
        let service = b.build();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let bytes_out = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let read_only = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let counter = requests.clone();
        let sent = bytes_out.clone();
        let denied = read_only.clone();
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
                let (root, denied) = (root.clone(), denied.clone());
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
                        let (service, root) = (service.clone(), root.clone());
                        let read_only = denied.load(Relaxed);
                        async move {
                            let resp = match serve(&service, req, quirks, read_only, &root).await {
                                Ok(r) => {
                                    let r = read_at_once(r, object.clone()).await;
                                    if quirks.whole_object_checksum_on_ranges {
                                        Ok(whole_object_checksum(r, object, &root).await)
                                    } else {
                                        Ok(r)
                                    }
                                }
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
            read_only,
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

/// The bucket and key of a path-style object URI, if it names one plainly:
/// no percent-escapes, and every segment a name (no empty, `.` or `..` one,
/// so the path stays below the root; not a folder marker either).
fn bucket_and_key(uri: &hyper::Uri) -> Option<(&str, &str)> {
    let path = uri.path();
    if path.contains(['%', '+']) {
        return None;
    }
    let (bucket, key) = path.strip_prefix('/')?.split_once('/')?;
    let plain = |s: &str| !s.is_empty() && s != "." && s != "..";
    (plain(bucket) && key.split('/').all(plain)).then_some((bucket, key))
}

/// The file behind a GetObject request (path-style `/bucket/key`, no query
/// but the SDK's `x-id`), if the request is one.
fn object_file<B>(root: &Path, req: &hyper::Request<B>) -> Option<PathBuf> {
    let uri = req.uri();
    let get_object =
        req.method() == hyper::Method::GET && uri.query().is_none_or(|q| q == "x-id=GetObject");
    let (bucket, key) = bucket_and_key(uri)?;
    get_object.then(|| root.join(bucket).join(key))
}

/// The checksum algorithms a PUT may claim, as header and trailer suffixes.
const CHECKSUMS: [&str; 5] = ["crc32", "crc32c", "sha1", "sha256", "crc64nvme"];

/// A plain PutObject, stored without MD5. s3s-fs hashes every uploaded byte
/// with MD5 for the ETag: half of this server's CPU in a backup (perf), spent
/// on the two cores the client under test needs, where a provider would spend
/// it on its own machines. A PUT with no Content-MD5 to verify, no condition,
/// no copy source, no user metadata and no storage class or encryption
/// settings is stored here instead, in s3s-fs's layout (the object file, then
/// its `.bucket-B.object-K.internal.json` with the ETag and checksums), and
/// s3s-fs serves it from then on as its own. The ETag is BLAKE3-derived: S3
/// ETags are opaque (multipart and SSE-KMS ones are not MD5s either). Claimed
/// checksums (headers or trailers) are verified before anything is written.
/// A route sees a request only after s3s has checked its signature. The body
/// is held in memory (at most the client's multipart threshold), not streamed.
/// With [`Quirks::ignore_if_none_match`], a PutObject with `If-None-Match`
/// is taken here too, and the condition ignored (the object overwritten).
struct PlainPut {
    root: PathBuf,
    seq: std::sync::atomic::AtomicU64,
    quirks: Quirks,
}

#[async_trait::async_trait]
impl s3s::route::S3Route for PlainPut {
    fn is_match(
        &self,
        method: &hyper::Method,
        uri: &hyper::Uri,
        headers: &hyper::HeaderMap,
        _: &mut hyper::http::Extensions,
    ) -> bool {
        let settings = headers.keys().any(|h| {
            let h = h.as_str();
            h.starts_with("x-amz-server-side-encryption")
                || h.starts_with("x-amz-meta-")
                || h == "x-amz-storage-class"
        });
        method == hyper::Method::PUT
            && uri.query().is_none_or(|q| q == "x-id=PutObject")
            && bucket_and_key(uri).is_some()
            && !settings
            && [
                "content-md5",
                "if-none-match",
                "if-match",
                "x-amz-copy-source",
            ]
            .iter()
            .filter(|h| !(self.quirks.ignore_if_none_match && **h == "if-none-match"))
            .all(|h| !headers.contains_key(*h))
    }

    async fn call(
        &self,
        req: s3s::S3Request<s3s::Body>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::Body>> {
        use http_body_util::BodyExt;
        use s3s::s3_error;
        let (bucket, key) = bucket_and_key(&req.uri).ok_or_else(|| s3_error!(InvalidRequest))?;
        let (bucket, key) = (bucket.to_string(), key.to_string());
        if !self.root.join(&bucket).is_dir() {
            return Err(s3_error!(NoSuchBucket));
        }
        // The body as it came, in pieces: joining them would copy every byte.
        let mut body = req.input;
        let mut data = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| s3_error!(IncompleteBody, "{e}"))?;
            if let Ok(piece) = frame.into_data() {
                data.push(piece);
            }
        }

        // Verify what the client claims, in headers or trailers.
        let trailers = req
            .trailing_headers
            .and_then(|t| t.take())
            .unwrap_or_default();
        let claimed = |alg: &str| {
            let name = format!("x-amz-checksum-{alg}");
            let value = req.headers.get(&name).or_else(|| trailers.get(&name));
            value.and_then(|v| v.to_str().ok()).map(str::to_string)
        };
        let mut hasher = s3s::checksum::ChecksumHasher::default();
        let on = |alg: &str| claimed(alg).is_some();
        if on("crc32") {
            hasher.crc32 = Some(Default::default());
        }
        if on("crc32c") {
            hasher.crc32c = Some(Default::default());
        }
        if on("sha1") {
            hasher.sha1 = Some(Default::default());
        }
        if on("sha256") {
            hasher.sha256 = Some(Default::default());
        }
        if on("crc64nvme") {
            hasher.crc64nvme = Some(Default::default());
        }
        let mut etag = blake3::Hasher::new();
        for piece in &data {
            hasher.update(piece);
            etag.update(piece);
        }
        let sums = hasher.finalize();
        let computed = [
            sums.checksum_crc32,
            sums.checksum_crc32c,
            sums.checksum_sha1,
            sums.checksum_sha256,
            sums.checksum_crc64nvme,
        ];
        let mut info = serde_json::Map::new();
        let mut resp = s3s::S3Response::new(s3s::Body::empty());
        for (alg, got) in CHECKSUMS.iter().zip(computed) {
            if got != claimed(alg) {
                return Err(s3_error!(BadDigest, "checksum_{alg} mismatch"));
            }
            if let Some(v) = got {
                info.insert(format!("checksum_{alg}"), v.clone().into());
                let value = v.parse().map_err(|_| s3_error!(InternalError))?;
                resp.headers.insert(
                    hyper::header::HeaderName::try_from(format!("x-amz-checksum-{alg}"))
                        .map_err(|_| s3_error!(InternalError))?,
                    value,
                );
            }
        }
        let etag = hex::encode(&etag.finalize().as_bytes()[..16]);
        info.insert("e_tag".into(), etag.clone().into());
        let etag_header = format!("\"{etag}\"")
            .parse()
            .map_err(|_| s3_error!(InternalError))?;
        resp.headers.insert(hyper::header::ETAG, etag_header);

        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let sidecar = |what| {
            let name = format!(".bucket-{}.object-{}.{what}.json", b64(&bucket), b64(&key));
            self.root.join(name)
        };
        // An earlier PUT's metadata (s3s-fs writes one) does not describe this object.
        let (info_path, meta_path) = (sidecar("internal"), sidecar("metadata"));
        let info = serde_json::to_vec(&info).map_err(|_| s3_error!(InternalError))?;
        let object = self.root.join(&bucket).join(&key);
        let seq = self.seq.fetch_add(2, std::sync::atomic::Ordering::Relaxed);
        let tmp = |n: u64| self.root.join(format!(".tmp.put-{n}.internal.part"));
        let (tmp_object, tmp_info) = (tmp(seq), tmp(seq + 1));
        let stored = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let put = |tmp: &Path, data: &[bytes::Bytes], to: &Path| {
                let write = || -> std::io::Result<()> {
                    use std::io::Write;
                    let mut file = std::fs::File::create(tmp)?;
                    for piece in data {
                        file.write_all(piece)?;
                    }
                    Ok(())
                };
                let res = write().and_then(|()| std::fs::rename(tmp, to));
                if res.is_err() {
                    let _ = std::fs::remove_file(tmp);
                }
                res
            };
            if let Some(dir) = object.parent() {
                std::fs::create_dir_all(dir)?;
            }
            put(&tmp_object, &data, &object)?;
            match std::fs::remove_file(&meta_path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            put(&tmp_info, &[info.into()], &info_path)
        })
        .await;
        match stored {
            Ok(Ok(())) => Ok(resp),
            Ok(Err(e)) => Err(s3_error!(InternalError, "{e}")),
            Err(e) => Err(s3_error!(InternalError, "{e}")),
        }
    }
}

/// The sidecar file where s3s-fs keeps an object's ETag and checksums.
fn info_file(root: &Path, bucket: &str, key: &str) -> PathBuf {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    root.join(format!(
        ".bucket-{}.object-{}.internal.json",
        b64(bucket),
        b64(key)
    ))
}

/// An aws-chunked upload: its body is framed in chunks (and, with
/// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`, ends in trailing checksums).
fn is_aws_chunked<B>(req: &hyper::Request<B>) -> bool {
    let h = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
            .unwrap_or("")
    };
    h("x-amz-content-sha256").starts_with("STREAMING-")
        || h("content-encoding").contains("aws-chunked")
}

/// An S3 error response, as a server that refuses a request before s3s
/// sees it sends it.
fn error_response(status: u16, code: &str, message: &str) -> hyper::Response<s3s::Body> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    let mut resp = hyper::Response::new(s3s::Body::from(xml));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/xml"),
    );
    resp
}

/// Hands a request to s3s, imitating the quirks that act on requests
/// ([`Quirks::reject_trailing_checksums`], [`Quirks::store_chunk_framing`]);
/// `read_only` refuses uploads ([`S3Server::read_only`]).
async fn serve(
    service: &s3s::service::S3Service,
    req: hyper::Request<hyper::body::Incoming>,
    quirks: Quirks,
    read_only: bool,
    root: &Path,
) -> Result<hyper::Response<s3s::Body>, s3s::HttpError> {
    use http_body_util::BodyExt;
    if read_only && matches!(*req.method(), hyper::Method::PUT | hyper::Method::POST) {
        let _ = req.into_body().collect().await;
        return Ok(error_response(403, "AccessDenied", "Access Denied"));
    }
    let chunked_put = req.method() == hyper::Method::PUT && is_aws_chunked(&req);
    if chunked_put && quirks.reject_trailing_checksums {
        let trailer = req.headers().contains_key("x-amz-trailer")
            || req
                .headers()
                .get("x-amz-content-sha256")
                .is_some_and(|v| v.as_bytes().ends_with(b"-TRAILER"));
        if trailer {
            // Read what was sent first, so the client sees the answer, not
            // a connection closed under its upload.
            let _ = req.into_body().collect().await;
            return Ok(error_response(411, "MissingContentLength", ""));
        }
    }
    let object_put = bucket_and_key(req.uri())
        .filter(|_| req.uri().query().is_none_or(|q| q == "x-id=PutObject"))
        .map(|(b, k)| (b.to_string(), k.to_string()));
    if let (true, true, Some((bucket, key))) = (chunked_put, quirks.store_chunk_framing, object_put)
    {
        let (parts, body) = req.into_parts();
        let Ok(raw) = body.collect().await.map(|c| c.to_bytes()) else {
            return Ok(error_response(400, "IncompleteBody", "body cut off"));
        };
        let req = hyper::Request::from_parts(parts, s3s::Body::from(raw.clone()));
        let resp = service.call(req).await?;
        if resp.status().is_success() {
            // What s3s decoded and stored is replaced by what was sent.
            let object = root.join(&bucket).join(&key);
            let info = info_file(root, &bucket, &key);
            let replaced = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                std::fs::write(&object, &raw)?;
                let text = std::fs::read(&info)?;
                let mut v: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(&text).unwrap_or_default();
                v.retain(|k, _| !k.starts_with("checksum_"));
                std::fs::write(&info, serde_json::to_vec(&v).unwrap_or_default())
            })
            .await;
            if !matches!(replaced, Ok(Ok(()))) {
                return Ok(error_response(500, "InternalError", "framing not stored"));
            }
        }
        return Ok(resp);
    }
    service.call(req.map(s3s::Body::from)).await
}

/// [`Quirks::whole_object_checksum_on_ranges`]: a 206 answer gets the whole
/// object's CRC32.
async fn whole_object_checksum(
    mut resp: hyper::Response<s3s::Body>,
    file: Option<PathBuf>,
    root: &Path,
) -> hyper::Response<s3s::Body> {
    let Some(file) = file.filter(|_| resp.status() == hyper::StatusCode::PARTIAL_CONTENT) else {
        return resp;
    };
    // The bucket and key, from the object's path below the root.
    let Some((bucket, key)) = file
        .strip_prefix(root)
        .ok()
        .and_then(|rel| rel.to_str())
        .and_then(|rel| rel.split_once('/'))
        .map(|(b, k)| (b.to_string(), k.to_string()))
    else {
        return resp;
    };
    let info = info_file(root, &bucket, &key);
    let crc = tokio::task::spawn_blocking(move || -> Option<String> {
        let stored = std::fs::read(&info)
            .ok()
            .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
            .and_then(|v| v["checksum_crc32"].as_str().map(str::to_string));
        stored.or_else(|| {
            let data = std::fs::read(&file).ok()?;
            let mut hasher = s3s::checksum::ChecksumHasher {
                crc32: Some(Default::default()),
                ..Default::default()
            };
            hasher.update(&data);
            hasher.finalize().checksum_crc32
        })
    })
    .await;
    if let Ok(Some(crc)) = crc
        && let Ok(value) = crc.parse()
    {
        resp.headers_mut().insert("x-amz-checksum-crc32", value);
    }
    resp
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
