//! The host end of the agent protocol (`banger_proto::agent`): a client
//! over any byte stream to the guest's agent (QEMU's virtio-serial
//! socket, or a Firecracker hybrid-vsock stream after its handshake).

pub mod client;
mod copy;
pub mod link;
