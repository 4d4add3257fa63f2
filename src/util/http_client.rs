//! A minimal HTTP/1.1 client over hyper for `engine send`, the tests and the benchmark.
//! Plain `http://` only: it talks to the engine directly, not through a TLS proxy.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{HeaderMap, Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("`{0}` is not a valid URL")]
    BadUrl(String),
    #[error(
        "`{0}`: only http:// URLs are supported\n  hint: point --url at the engine itself (e.g. http://127.0.0.1:8080/hooks/default), not at the HTTPS proxy in front of it"
    )]
    Scheme(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("invalid header `{0}`\n  hint: write it as 'Name: value'")]
    BadHeader(String),
    #[error("HTTP error: {0}")]
    Http(#[from] hyper::Error),
    #[error("request error: {0}")]
    Request(#[from] hyper::http::Error),
}

/// An answer with its body read.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A kept-alive connection to one server.
pub struct Conn {
    host: String,
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    /// Connects to `http://host:port` (any path in `url` is ignored here).
    pub async fn open(url: &str) -> Result<Conn, ClientError> {
        let (_, authority, _) = split(url)?;
        let stream =
            TcpStream::connect(&authority)
                .await
                .map_err(|source| ClientError::Connect {
                    addr: authority.clone(),
                    source,
                })?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            host: authority,
            sender,
        })
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<Answer, ClientError> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.host);
        if !body.is_empty() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            req = req.header(name.as_str(), value.as_str());
        }
        let req = req.body(Full::new(body))?;
        self.sender.ready().await?;
        let res = self.sender.send_request(req).await?;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

/// One request on a fresh connection.
pub async fn request(
    method: Method,
    url: &str,
    headers: &[(String, String)],
    body: Bytes,
) -> Result<Answer, ClientError> {
    let (_, _, path) = split(url)?;
    let mut conn = Conn::open(url).await?;
    conn.send(method, &path, headers, body).await
}

/// Parses `Name: value`.
pub fn parse_header(s: &str) -> Result<(String, String), ClientError> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| ClientError::BadHeader(s.to_string()))?;
    let name = name.trim();
    if name.is_empty() || hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(ClientError::BadHeader(s.to_string()));
    }
    Ok((name.to_string(), value.trim().to_string()))
}

/// (scheme, host:port, path-and-query)
fn split(url: &str) -> Result<(String, String, String), ClientError> {
    let uri: Uri = url
        .parse()
        .map_err(|_| ClientError::BadUrl(url.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(_) => return Err(ClientError::Scheme(url.to_string())),
        None => return Err(ClientError::BadUrl(url.to_string())),
    }
    let host = uri
        .host()
        .ok_or_else(|| ClientError::BadUrl(url.to_string()))?;
    let authority = format!("{host}:{}", uri.port_u16().unwrap_or(80));
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    Ok(("http".into(), authority, path))
}
