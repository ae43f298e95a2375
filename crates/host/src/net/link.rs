//! Links over netlink (rtnetlink): the bridge (made, addressed, up), TAP
//! devices attached to it, renames, and the uplink (the interface of the
//! default route). TAP devices themselves are made by the kernel's tun
//! ioctl, which `ip tuntap` performs (the ioctl needs unsafe code, which
//! the workspace denies): it runs when the warm pool refills, and while
//! a VM waits only when the pool is empty.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::route::RouteAttribute;
use rtnetlink::{Handle, IpVersion};
use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("no link named {0}")]
    NoLink(String),
    #[error("cannot make tap {name}: {detail}")]
    Tap { name: String, detail: String },
}

fn nl(err: impl std::fmt::Display) -> LinkError {
    LinkError::Netlink(err.to_string())
}

/// A netlink session.
#[derive(Clone)]
pub struct Links {
    handle: Handle,
}

impl Links {
    pub fn connect() -> Result<Links, LinkError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(nl)?;
        tokio::spawn(connection);
        Ok(Links { handle })
    }

    /// The index of link `name`, if it exists.
    pub async fn index(&self, name: &str) -> Result<Option<u32>, LinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(Some(link.header.index)),
            Ok(None) => Ok(None),
            Err(rtnetlink::Error::NetlinkError(_)) => Ok(None),
            Err(err) => Err(nl(err)),
        }
    }

    async fn require(&self, name: &str) -> Result<u32, LinkError> {
        self.index(name)
            .await?
            .ok_or_else(|| LinkError::NoLink(name.to_string()))
    }

    /// Names of all links.
    pub async fn names(&self) -> Result<Vec<String>, LinkError> {
        Ok(self.names_by_index().await?.into_values().collect())
    }

    /// Every link's name by its index.
    async fn names_by_index(&self) -> Result<HashMap<u32, String>, LinkError> {
        let mut links = self.handle.link().get().execute();
        let mut names = HashMap::new();
        while let Some(link) = links.try_next().await.map_err(nl)? {
            for attr in link.attributes {
                if let LinkAttribute::IfName(name) = attr {
                    names.insert(link.header.index, name);
                }
            }
        }
        Ok(names)
    }

    /// Makes the bridge if missing, gives it `addr/prefix` if it lacks it,
    /// and brings it up.
    pub async fn ensure_bridge(
        &self,
        name: &str,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<u32, LinkError> {
        if self.index(name).await?.is_none() {
            self.handle
                .link()
                .add()
                .bridge(name.to_string())
                .execute()
                .await
                .map_err(nl)?;
        }
        let index = self.require(name).await?;
        let mut addresses = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut present = false;
        let mut stale = Vec::new();
        while let Some(message) = addresses.try_next().await.map_err(nl)? {
            let v4 = message.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Address(IpAddr::V4(a)) => Some(*a),
                _ => None,
            });
            match v4 {
                Some(a) if a == addr && message.header.prefix_len == prefix => present = true,
                Some(_) => stale.push(message),
                None => {}
            }
        }
        // The bridge is banger's: an address from an older bridge_address
        // would route a second prefix to the guests.
        for message in stale {
            self.handle
                .address()
                .del(message)
                .execute()
                .await
                .map_err(nl)?;
        }
        if !present {
            self.handle
                .address()
                .add(index, IpAddr::V4(addr), prefix)
                .execute()
                .await
                .map_err(nl)?;
        }
        self.handle
            .link()
            .set(index)
            .up()
            .execute()
            .await
            .map_err(nl)?;
        Ok(index)
    }

    /// Makes a persistent TAP device (down, detached).
    pub async fn create_tap(&self, name: &str) -> Result<(), LinkError> {
        let ip = crate::tools::find_tool("ip").unwrap_or("ip".into());
        let out = Command::new(ip)
            .args(["tuntap", "add", "dev", name, "mode", "tap"])
            .output()
            .await
            .map_err(|e| LinkError::Tap {
                name: name.into(),
                detail: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(LinkError::Tap {
                name: name.into(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    /// Attaches `name` to `bridge` and brings it up.
    pub async fn attach_up(&self, name: &str, bridge: u32) -> Result<(), LinkError> {
        let index = self.require(name).await?;
        self.handle
            .link()
            .set(index)
            .controller(bridge)
            .execute()
            .await
            .map_err(nl)?;
        self.handle
            .link()
            .set(index)
            .up()
            .execute()
            .await
            .map_err(nl)
    }

    /// Renames a link (taken down for it, brought up after).
    pub async fn rename(&self, from: &str, to: &str) -> Result<(), LinkError> {
        let index = self.require(from).await?;
        self.handle
            .link()
            .set(index)
            .down()
            .execute()
            .await
            .map_err(nl)?;
        self.handle
            .link()
            .set(index)
            .name(to.to_string())
            .execute()
            .await
            .map_err(nl)?;
        self.handle
            .link()
            .set(index)
            .up()
            .execute()
            .await
            .map_err(nl)
    }

    pub async fn delete(&self, name: &str) -> Result<(), LinkError> {
        if let Some(index) = self.index(name).await? {
            self.handle.link().del(index).execute().await.map_err(nl)?;
        }
        Ok(())
    }

    /// Every IPv4 address on the host's links: (link name, address, prefix).
    pub async fn ipv4_addresses(&self) -> Result<Vec<(String, Ipv4Addr, u8)>, LinkError> {
        let names = self.names_by_index().await?;
        let mut found = Vec::new();
        let mut addresses = self.handle.address().get().execute();
        while let Some(message) = addresses.try_next().await.map_err(nl)? {
            for attr in &message.attributes {
                if let AddressAttribute::Address(IpAddr::V4(a)) = attr {
                    let name = names
                        .get(&message.header.index)
                        .cloned()
                        .unwrap_or_else(|| format!("link {}", message.header.index));
                    found.push((name, *a, message.header.prefix_len));
                }
            }
        }
        Ok(found)
    }

    /// The interface of the IPv4 default route.
    pub async fn uplink(&self) -> Result<Option<String>, LinkError> {
        let mut routes = self.handle.route().get(IpVersion::V4).execute();
        let mut oif = None;
        while let Some(route) = routes.try_next().await.map_err(nl)? {
            if route.header.destination_prefix_length != 0 {
                continue;
            }
            for attr in route.attributes {
                if let RouteAttribute::Oif(index) = attr {
                    oif = Some(index);
                }
            }
        }
        let Some(index) = oif else {
            return Ok(None);
        };
        let mut links = self.handle.link().get().match_index(index).execute();
        if let Some(link) = links.try_next().await.map_err(nl)? {
            for attr in link.attributes {
                if let LinkAttribute::IfName(name) = attr {
                    return Ok(Some(name));
                }
            }
        }
        Ok(None)
    }
}
