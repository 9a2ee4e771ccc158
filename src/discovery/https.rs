//! A small HTTPS client for key discovery (GET) and, to come, the release
//! hooks of issue 21 (POST and PATCH with a body): hyper's HTTP/1.1 client
//! over a tokio-native-tls stream (the TLS stack the SMTP and IMAP sides
//! already use), with the system's roots plus an optional extra CA, a
//! bound on time and on the size of an answer, and no redirects.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use tokio::net::TcpStream;

/// An `https://host[:port]/path?query` address, as this module builds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    /// From the first `/`, with its query.
    pub path: String,
}

impl Url {
    /// Reads an `https://` address; anything else (another scheme, user
    /// info, a fragment, no host) is an error naming what is wrong.
    pub fn parse(text: &str) -> Result<Url, String> {
        let rest = text
            .strip_prefix("https://")
            .ok_or_else(|| format!("`{text}` is not an https:// address"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') || path.contains('#') {
            return Err(format!(
                "`{text}`: user names and fragments are not allowed"
            ));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("`{text}`: the port is not a number"))?,
            ),
            None => (authority, 443),
        };
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(format!("`{text}`: `{host}` is not a host name"));
        }
        Ok(Url {
            host: host.to_ascii_lowercase(),
            port,
            path: path.to_owned(),
        })
    }

    /// This address with `path` (absolute, with its query) in place of its own.
    pub fn with_path(&self, path: &str) -> Url {
        Url {
            path: path.to_owned(),
            ..self.clone()
        }
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.port == 443 {
            write!(f, "https://{}{}", self.host, self.path)
        } else {
            write!(f, "https://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

/// Why a GET gave no answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// The host name has no address (not an error for WKD: the domain
    /// does not serve keys).
    NoSuchHost,
    /// Anything else, in words.
    Other(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Failure {
        Failure::Other(s)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NoSuchHost => f.write_str("no such host"),
            Failure::Other(s) => f.write_str(s),
        }
    }
}

/// What [`Client::send`] sends: the `User-Agent` and `Host` are the
/// client's; a body has its `Content-Length`.
pub struct Request<'a> {
    pub method: hyper::Method,
    pub url: &'a Url,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Bytes,
}

/// Header values may be credentials (a hook's token): names only.
impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| *n).collect();
        write!(
            f,
            "Request({} {}, headers {names:?}, {} octets)",
            self.method,
            self.url.host,
            self.body.len()
        )
    }
}

/// An answer: its status, its headers and its body (at most the client's
/// bound; empty from [`Client::send_for_status`]).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

/// The client. Cheap to build; one per discovery or refresh run.
#[derive(Clone)]
pub struct Client {
    tls: tokio_native_tls::TlsConnector,
    /// Host names sent to another address (`[discovery] connect_to`).
    connect_to: Vec<(String, SocketAddr)>,
    timeout: Duration,
    max_body: usize,
}

impl Client {
    /// `extra_ca`: PEM certificates trusted besides the system's roots.
    pub fn new(
        extra_ca: Option<&[u8]>,
        connect_to: Vec<(String, SocketAddr)>,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Client, String> {
        let mut b = tokio_native_tls::native_tls::TlsConnector::builder();
        b.min_protocol_version(Some(tokio_native_tls::native_tls::Protocol::Tlsv12));
        if let Some(pem) = extra_ca {
            for cert in split_pem(pem) {
                let ca = tokio_native_tls::native_tls::Certificate::from_pem(&cert)
                    .map_err(|e| format!("the extra CA is not a PEM certificate: {e}"))?;
                b.add_root_certificate(ca);
            }
        }
        let tls = b.build().map_err(|e| format!("cannot set up TLS: {e}"))?;
        Ok(Client {
            tls: tls.into(),
            connect_to,
            timeout,
            max_body,
        })
    }

    /// GETs `url`: the whole exchange within the client's timeout, the
    /// body within its bound. A redirect is an answer like any other (its
    /// status), never followed.
    pub async fn get(&self, url: &Url, accept: &str) -> Result<Response, Failure> {
        self.send(&Request {
            method: hyper::Method::GET,
            url,
            headers: &[(hyper::header::ACCEPT.as_str(), accept)],
            body: Bytes::new(),
        })
        .await
    }

    /// Sends `request`: the whole exchange within the client's timeout,
    /// the answer's body within its bound; a redirect is an answer, never
    /// followed.
    pub async fn send(&self, request: &Request<'_>) -> Result<Response, Failure> {
        match tokio::time::timeout(self.timeout, self.exchange(request, true)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} s", self.timeout.as_secs_f32()).into()),
        }
    }

    /// Sends `request` and takes the answer's status and headers, never
    /// its body (however long or slow): what a caller that acts on the
    /// status alone needs, within the client's timeout.
    pub async fn send_for_status(&self, request: &Request<'_>) -> Result<Response, Failure> {
        match tokio::time::timeout(self.timeout, self.exchange(request, false)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} s", self.timeout.as_secs_f32()).into()),
        }
    }

    async fn exchange(&self, r: &Request<'_>, with_body: bool) -> Result<Response, Failure> {
        let url = r.url;
        let routed = self
            .connect_to
            .iter()
            .find(|(h, _)| h.eq_ignore_ascii_case(&url.host))
            .map(|(_, a)| *a);
        let addrs: Vec<SocketAddr> = match routed {
            Some(addr) => vec![addr],
            None => match tokio::net::lookup_host((url.host.as_str(), url.port)).await {
                Ok(found) => found.collect(),
                // getaddrinfo's EAI_NONAME and EAI_NODATA: the name has no
                // address (a domain without the WKD host, say); a
                // temporary failure is a failure.
                Err(e)
                    if [
                        "Name or service not known",
                        "No address associated",
                        "Name does not resolve",
                    ]
                    .iter()
                    .any(|m| e.to_string().contains(m)) =>
                {
                    return Err(Failure::NoSuchHost);
                }
                Err(e) => return Err(format!("cannot look {} up: {e}", url.host).into()),
            },
        };
        let tcp = TcpStream::connect(&addrs[..])
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", url.host))?;
        let tls = self
            .tls
            .connect(&url.host, tcp)
            .await
            .map_err(|e| format!("TLS with {} failed: {e}", url.host))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| format!("HTTP with {} failed: {e}", url.host))?;
        // The connection's task ends with this exchange, however it ends
        // (a timeout drops this future).
        struct Abort(tokio::task::JoinHandle<Result<(), hyper::Error>>);
        impl Drop for Abort {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let _driver = Abort(tokio::spawn(connection));
        let host = if url.port == 443 {
            url.host.clone()
        } else {
            format!("{}:{}", url.host, url.port)
        };
        let mut request = hyper::Request::builder()
            .method(r.method.clone())
            .uri(url.path.as_str())
            .header(hyper::header::HOST, host)
            .header(
                hyper::header::USER_AGENT,
                concat!("embargo-relay/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in r.headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(r.body.clone()))
            // The host only: a path may name what is still embargoed.
            .map_err(|e| Failure::Other(format!("bad request for {}: {e}", url.host)))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Failure::Other(format!("HTTP with {} failed: {e}", url.host)))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        if !with_body {
            return Ok(Response {
                status,
                headers,
                body: Bytes::new(),
            });
        }
        let body = Limited::new(response.into_body(), self.max_body)
            .collect()
            .await
            .map_err(|e| {
                Failure::Other(if e.is::<http_body_util::LengthLimitError>() {
                    format!("the answer is larger than {} bytes", self.max_body)
                } else {
                    format!("the answer from {} broke off: {e}", url.host)
                })
            })?
            .to_bytes();
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// The `-----BEGIN CERTIFICATE-----` blocks of a PEM file, each on its own
/// (native-tls takes one certificate at a time).
fn split_pem(pem: &[u8]) -> Vec<Vec<u8>> {
    const END: &str = "-----END CERTIFICATE-----";
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let Some(end) = rest[start..].find(END) else {
            break;
        };
        let end = start + end + END.len();
        out.push(rest.as_bytes()[start..end].to_vec());
        rest = &rest[end..];
    }
    if out.is_empty() {
        out.push(pem.to_vec());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_addresses_are_read_strictly() {
        let u = Url::parse("https://Keys.Example.org:8443/vks/v1?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("keys.example.org", 8443, "/vks/v1?x=1")
        );
        assert_eq!(u.to_string(), "https://keys.example.org:8443/vks/v1?x=1");
        assert_eq!(
            Url::parse("https://example.org").unwrap().to_string(),
            "https://example.org/"
        );
        for bad in [
            "http://example.org/",
            "hkp://example.org",
            "https://user@example.org/",
            "https:///x",
            "https://exa mple.org/",
            "https://example.org:99999/",
            "https://example.org/#top",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_pem_file_of_several_certificates_is_split() {
        let one = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----";
        let pem = format!("# comment\n{one}\n{one}\n");
        assert_eq!(split_pem(pem.as_bytes()).len(), 2);
        assert_eq!(split_pem(b"junk").len(), 1, "left for native-tls to refuse");
    }
}
