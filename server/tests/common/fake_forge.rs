//! A fake forge (GitHub, Gitea and GitLab APIs, and a webhook receiver):
//! fakes are fine for a forge, which no user runs here.

/// A recorded request to the fake forge.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: String,
    pub private_token: String,
    pub signature: String,
    pub body: String,
}

/// A fake forge (and webhook receiver) on loopback: records every request
/// and answers 201, with `{"id": N}` (a new N each time) to a POST that
/// creates a deployment (a path ending in `/deployments`), as GitHub and
/// GitLab do.
pub fn fake_forge() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Seen>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut words = line.split_whitespace();
            let method = words.next().unwrap_or("").to_owned();
            let path = words.next().unwrap_or("").to_owned();
            let (mut length, mut authorization, mut private_token, mut signature) =
                (0, String::new(), String::new(), String::new());
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
                let (name, value) = header.split_once(':').unwrap_or(("", ""));
                let value = value.trim().to_owned();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.parse().unwrap_or(0),
                    "authorization" => authorization = value,
                    "private-token" => private_token = value,
                    "x-slipway-signature-256" => signature = value,
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let creates = method == "POST" && path.ends_with("/deployments");
            let mut seen = record.lock().unwrap();
            seen.push(Seen {
                method,
                path,
                authorization,
                private_token,
                signature,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            let body = if creates {
                format!("{{\"id\": {}}}", 1000 + seen.len())
            } else {
                String::new()
            };
            drop(seen);
            let _ = stream.write_all(
                format!(
                    "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    (url, seen)
}
