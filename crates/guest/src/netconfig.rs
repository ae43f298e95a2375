//! Static network setup over netlink: `lo` up; `eth0` gets its address,
//! comes up, and gets the default route. `readdress` moves a running
//! guest (restored from a snapshot) to a new MAC and address.

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
    assign(&handle, index, (ip, prefix), gateway).await
}

/// Gives link `index` the address, brings it up, and routes by `gateway`.
async fn assign(
    handle: &rtnetlink::Handle,
    index: u32,
    (ip, prefix): (Ipv4Addr, u8),
    gateway: Option<Ipv4Addr>,
) -> Result<(), NetError> {
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
            .replace()
            .execute()
            .await
            .map_err(nl)?;
    }
    Ok(())
}

/// Gives `iface` a new MAC (when given) and `address` in place of its
/// IPv4 addresses, and the default route through `gateway`.
pub async fn readdress(
    iface: &str,
    mac: Option<&str>,
    address: (Ipv4Addr, u8),
    gateway: Option<Ipv4Addr>,
) -> Result<(), NetError> {
    use netlink_packet_route::address::AddressAttribute;
    let (connection, handle, _) = rtnetlink::new_connection().map_err(nl)?;
    tokio::spawn(connection);
    let index = link_index(&handle, iface)
        .await?
        .ok_or_else(|| NetError::NoLink(iface.to_string(), Duration::ZERO))?;
    if let Some(mac) = mac {
        let bytes = parse_mac(mac).ok_or_else(|| NetError::Netlink(format!("bad mac {mac}")))?;
        // Down first: a driver without live MAC changes refuses them up.
        handle
            .link()
            .set(index)
            .down()
            .execute()
            .await
            .map_err(nl)?;
        handle
            .link()
            .set(index)
            .address(bytes)
            .execute()
            .await
            .map_err(nl)?;
    }
    let mut old = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    let mut stale = Vec::new();
    while let Some(message) = old.try_next().await.map_err(nl)? {
        let v4 = message
            .attributes
            .iter()
            .any(|a| matches!(a, AddressAttribute::Address(IpAddr::V4(_))));
        if v4 {
            stale.push(message);
        }
    }
    for message in stale {
        handle.address().del(message).execute().await.map_err(nl)?;
    }
    // Deleting the addresses took their routes; the default one comes back.
    assign(&handle, index, address, gateway).await
}

fn parse_mac(text: &str) -> Option<Vec<u8>> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|part| u8::from_str_radix(part, 16).ok())
        .collect::<Option<_>>()?;
    (bytes.len() == 6).then_some(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn macs_parse() {
        assert_eq!(
            super::parse_mac("06:00:ac:1d:00:09"),
            Some(vec![6, 0, 0xac, 0x1d, 0, 9])
        );
        assert_eq!(super::parse_mac("06:00:ac"), None);
        assert_eq!(super::parse_mac("zz:00:ac:1d:00:09"), None);
    }
}
