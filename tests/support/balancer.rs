//! A round-robin TCP balancer on 127.0.0.1, as a load balancer in front of broker replicas
//! would be: each new connection goes to the next backend, bytes copied both ways. It records
//! which backend took each connection, so a test can say which replica answered.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

pub struct Balancer {
    pub url: String,
    /// The backend (index) of each connection, in order.
    pub served: Arc<Mutex<Vec<usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    /// Balance over `backends` (`http://127.0.0.1:PORT` URLs).
    pub async fn start(backends: &[&str]) -> Balancer {
        let backends: Vec<SocketAddr> = backends
            .iter()
            .map(|u| u.strip_prefix("http://").unwrap().parse().unwrap())
            .collect();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let served = Arc::new(Mutex::new(Vec::new()));
        let log = served.clone();
        let task = tokio::spawn(async move {
            let mut next = 0usize;
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let i = next % backends.len();
                next += 1;
                log.lock().unwrap().push(i);
                let backend = backends[i];
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Balancer { url, served, task }
    }

    /// The backend of the last connection.
    pub fn last(&self) -> usize {
        *self.served.lock().unwrap().last().unwrap()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
