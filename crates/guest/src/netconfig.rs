//! Static network setup over netlink: `lo` up; `eth0` gets its address,
//! comes up, and gets the default route.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("no link named {0} after {1:?}")]
    NoLink(String, Duration),
}

fn nl(err: impl std::fmt::Display) -> NetError {
    NetError::Netlink(err.to_string())
}

async fn link_index(handle: &rtnetlink::Handle, name: &str) -> Result<Option<u32>, NetError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(Some(link.header.index)),
        Ok(None) => Ok(None),
        // The kernel answers ENODEV for a name it does not know (yet).
        Err(rtnetlink::Error::NetlinkError(_)) => Ok(None),
        Err(err) => Err(nl(err)),
    }
}

/// Brings up `lo`, and `iface` with `ip/prefix` and `gateway` when given.
/// Waits up to `wait` for `iface` to appear (its driver may still probe).
pub async fn configure(
    iface: &str,
    address: Option<(Ipv4Addr, u8)>,
    gateway: Option<Ipv4Addr>,
    wait: Duration,
) -> Result<(), NetError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(nl)?;
    tokio::spawn(connection);
    if let Some(lo) = link_index(&handle, "lo").await? {
        handle.link().set(lo).up().execute().await.map_err(nl)?;
    }
    let Some((ip, prefix)) = address else {
        return Ok(());
    };
    let deadline = Instant::now() + wait;
    let index = loop {
        if let Some(index) = link_index(&handle, iface).await? {
            break index;
        }
        if Instant::now() > deadline {
            return Err(NetError::NoLink(iface.to_string(), wait));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    handle
        .address()
        .add(index, IpAddr::V4(ip), prefix)
        .execute()
        .await
        .map_err(nl)?;
    handle.link().set(index).up().execute().await.map_err(nl)?;
    if let Some(gw) = gateway {
        handle
            .route()
            .add()
            .v4()
            .gateway(gw)
            .execute()
            .await
            .map_err(nl)?;
    }
    Ok(())
}
