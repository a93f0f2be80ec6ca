//! Real servers on port 0: a listener on a free local port, or a free port for a child process
//! to listen on.

/// A listener on a free local port and its `http://` address.
pub async fn listener() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free local port");
    let endpoint = format!("http://{}", l.local_addr().expect("a local address"));
    (l, endpoint)
}

/// A local port free now, for a child process to listen on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
