//! `banger vm ...`.

use anyhow::Result;
use banger_proto::rules::DiskBytes;
use banger_proto::units::parse_size;
use banger_proto::vm::{
    Mount, PortForward, PortList, Vm, VmCreateRequest, VmList, VmUpdateRequest,
};
use clap::{Args, Subcommand};

use crate::client::{checked, Client};
use crate::output::{self, col, say, wide, Format, OutputArgs};

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Create a VM.
    Create(CreateArgs),
    /// List VMs.
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show one VM.
    Show {
        /// VM name or id.
        vm: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Start stopped VMs.
    Start {
        #[arg(required = true)]
        vms: Vec<String>,
    },
    /// Stop running VMs (the guest powers off; killed after a grace time).
    Stop {
        #[arg(required = true)]
        vms: Vec<String>,
        /// Kill at once.
        #[arg(short, long)]
        force: bool,
    },
    /// Stop and start VMs.
    Restart {
        #[arg(required = true)]
        vms: Vec<String>,
    },
    /// Create a VM, wait until SSH answers, and open a shell in it (or run
    /// CMD and exit with its status).
    Run {
        #[command(flatten)]
        create: RunArgs,
        /// Remove the VM when the shell or command ends.
        #[arg(long)]
        rm: bool,
        /// A command to run instead of a shell, after `--`.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Open a shell in a running VM over SSH (or run CMD).
    Ssh {
        vm: String,
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Change a VM's settings (live when it runs).
    Set {
        vm: String,
        /// Outbound NAT.
        #[arg(long, value_parser = ["on", "off"])]
        nat: Option<String>,
    },
    /// Show the guest console of the last boot.
    Logs {
        vm: String,
        /// Keep printing new output until the VM stops.
        #[arg(short, long)]
        follow: bool,
        /// The bytes as the guest wrote them, escape sequences and all
        /// (on a terminal, control characters are otherwise shown as ^X).
        #[arg(long)]
        raw: bool,
    },
    /// Copy files and directories between the host and a running VM:
    /// one side is VM:/path (as `docker cp`). Links stay links, modes
    /// and times are kept; owners are the VM user's (into a VM) or
    /// yours (out of one) unless -a.
    Cp {
        src: String,
        dst: String,
        /// Keep numeric owners as they are (out of a VM: as root).
        #[arg(short = 'a', long)]
        archive: bool,
    },
    /// List, add or remove a running or stopped VM's published ports.
    #[command(subcommand)]
    Port(PortCommand),
    /// What VMs use on the host: CPU (over a second), memory, disk, network.
    Stats {
        /// VM names or ids [default: every running VM].
        vms: Vec<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Run a command in a running VM; exits with the command's status.
    Exec {
        vm: String,
        /// Give the command our input: read to its end, at most 1 MiB
        /// (with -t: the terminal's keystrokes, as they are typed).
        #[arg(short = 'i', long)]
        interactive: bool,
        /// Run as this user (NAME, UID, NAME:GROUP or UID:GID) instead of
        /// the image's.
        #[arg(short = 'u', long)]
        user: Option<String>,
        /// Run on a terminal in the guest, this one in raw mode (-it):
        /// Ctrl-C and Ctrl-\ reach the command; /bin/sh without a command.
        #[arg(short = 't', long)]
        tty: bool,
        /// The command and its arguments, after `--`.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Save a running VM (memory, devices, disks) as a snapshot; it runs on.
    Snapshot {
        vm: String,
        /// Name of the snapshot [default: VM-xxxxxx].
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Make running copies of a running VM, each a machine of its own
    /// with the processes and memory of the original.
    Fork {
        vm: String,
        /// How many copies (1-16).
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// The copy's name; NAME-1, NAME-2.. for several [default: VM-xxxx].
        #[arg(long)]
        name: Option<String>,
        /// Outbound NAT for the copies [default: the original's].
        #[arg(long, value_parser = ["on", "off"])]
        nat: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a VM and everything it owns on the host.
    #[command(alias = "remove")]
    Rm {
        /// VM names or ids.
        #[arg(required = true)]
        vms: Vec<String>,
        /// Remove even if it may still run.
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PortCommand {
    /// List a VM's published ports.
    Ls {
        vm: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Publish a host port: [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|/udp]
    /// (live when the VM runs; kept across restarts).
    Add {
        vm: String,
        #[arg(value_parser = parse_publish)]
        forward: PortForward,
    },
    /// Stop publishing a host port: HOST_PORT[/tcp|/udp].
    Rm { vm: String, port: String },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Name; two random words when left out.
    #[arg(long)]
    name: Option<String>,
    /// Image name or id [default: the daemon's default image].
    #[arg(long)]
    image: Option<String>,
    #[arg(long)]
    vcpus: Option<u32>,
    /// Memory in MiB.
    #[arg(long)]
    memory: Option<u32>,
    /// Size of the /root work disk, like 8G.
    #[arg(long)]
    disk: Option<String>,
    /// Give the VM outbound NAT.
    #[arg(long)]
    nat: bool,
    /// Its address, inside the bridge prefix [default: the next free one].
    #[arg(long)]
    ip: Option<String>,
    /// Start from this snapshot instead of booting.
    #[arg(long)]
    from: Option<String>,
    /// Boot even when the image has a warm template.
    #[arg(long)]
    cold: bool,
    /// Forward a host port to the guest: [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|/udp]
    /// (repeatable; HOST_IP 127.0.0.1 unless given).
    #[arg(short = 'p', long = "publish", value_parser = parse_publish)]
    publish: Vec<PortForward>,
    /// Share a host directory: HOST_DIR:GUEST_DIR[:ro] (repeatable;
    /// absolute paths; QEMU VMs, served with your rights).
    #[arg(long = "mount", value_parser = parse_mount)]
    mount: Vec<Mount>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Name (`[a-z][a-z0-9-]{0,62}`); two random words when left out.
    #[arg(long)]
    name: Option<String>,
    /// Image name or id [default: the daemon's default image].
    #[arg(long)]
    image: Option<String>,
    /// Virtual CPUs (1-64).
    #[arg(long)]
    vcpus: Option<u32>,
    /// Memory in MiB (at least 64).
    #[arg(long)]
    memory: Option<u32>,
    /// Size of the /root work disk, like 8G.
    #[arg(long)]
    disk: Option<String>,
    /// Size of the system overlay disk, like 4G.
    #[arg(long)]
    system_disk: Option<String>,
    /// Give the VM outbound NAT.
    #[arg(long)]
    nat: bool,
    /// Its address, inside the bridge prefix [default: the next free one].
    #[arg(long)]
    ip: Option<String>,
    /// Record the VM without booting it.
    #[arg(long)]
    no_start: bool,
    /// Start from this snapshot (its image and shape) instead of booting.
    #[arg(long)]
    from: Option<String>,
    /// Boot even when the image has a warm template of this shape.
    #[arg(long)]
    cold: bool,
    /// Forward a host port to the guest: [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|/udp]
    /// (repeatable; HOST_IP 127.0.0.1 unless given).
    #[arg(short = 'p', long = "publish", value_parser = parse_publish)]
    publish: Vec<PortForward>,
    /// Share a host directory: HOST_DIR:GUEST_DIR[:ro] (repeatable;
    /// absolute paths; QEMU VMs, served with your rights).
    #[arg(long = "mount", value_parser = parse_mount)]
    mount: Vec<Mount>,
    #[arg(long)]
    json: bool,
}

fn parse_publish(text: &str) -> Result<PortForward, String> {
    text.parse()
}

fn parse_mount(text: &str) -> Result<Mount, String> {
    text.parse()
}

/// A disk size as typed (`8G`) in the bytes the API takes.
fn disk_bytes(text: Option<String>) -> Result<Option<DiskBytes>> {
    let Some(text) = text else { return Ok(None) };
    let bytes = parse_size(&text).map_err(|err| {
        crate::client::bad_input(err.to_string(), "see --help for the accepted values")
    })?;
    checked(bytes).map(Some)
}

pub async fn run(client: &Client, command: VmCommand) -> Result<()> {
    match command {
        VmCommand::Create(args) => {
            let request = VmCreateRequest {
                ssh_keys: offered_keys()?,
                name: args.name.map(checked).transpose()?,
                image: args.image,
                vcpus: args.vcpus.map(|n| checked(u64::from(n))).transpose()?,
                memory_mib: args.memory.map(|n| checked(u64::from(n))).transpose()?,
                work_disk_bytes: disk_bytes(args.disk)?,
                system_disk_bytes: disk_bytes(args.system_disk)?,
                nat: args.nat,
                no_start: args.no_start,
                guest_ip: args.ip,
                remove_on_failure: false,
                from: args.from.map(checked).transpose()?,
                cold: args.cold,
                publish: args.publish,
                mounts: args.mount,
            };
            let vm = create_watched(client, &request, args.json).await?;
            if args.json {
                return output::json(&vm);
            }
            output::made(&vm.name, || {
                format!(
                    "created {} ({}, {}, {})",
                    vm.name,
                    vm.id,
                    vm.guest_ip,
                    vm.state.as_str()
                )
            });
        }
        VmCommand::Ls { output } => {
            let list: VmList = client.get("/v1/vms").await?;
            let rows: Vec<Vec<String>> = list
                .vms
                .iter()
                .map(|vm| {
                    let ports: Vec<String> = vm.ports.iter().map(|p| p.to_string()).collect();
                    vec![
                        vm.name.clone(),
                        vm.state.as_str().to_string(),
                        vm.guest_ip.clone(),
                        vm.image_name.clone(),
                        vm.vcpus.to_string(),
                        format!("{}M", vm.memory_mib),
                        output::size(vm.work_disk_bytes),
                        vm.id.clone(),
                        if vm.nat { "on" } else { "off" }.to_string(),
                        vm.vmm.clone(),
                        if ports.is_empty() {
                            "-".into()
                        } else {
                            ports.join(",")
                        },
                        vm.created_at.clone(),
                    ]
                })
                .collect();
            output::list(
                &output,
                &list,
                &[
                    col("NAME"),
                    col("STATE"),
                    col("IP"),
                    col("IMAGE"),
                    col("VCPUS"),
                    col("MEMORY"),
                    col("DISK"),
                    col("ID"),
                    wide("NAT"),
                    wide("VMM"),
                    wide("PORTS"),
                    wide("CREATED"),
                ],
                &rows,
            )?;
        }
        VmCommand::Show { vm, output } => {
            let vm: Vm = client
                .get(&format!("/v1/vms/{}", path_segment(&vm)))
                .await?;
            if output.format() == Format::Json {
                return output::json(&vm);
            }
            show(&vm);
        }
        VmCommand::Start { vms } => {
            for name in vms {
                let vm: Vm = client
                    .post(&format!("/v1/vms/{}/start", path_segment(&name)), &())
                    .await?;
                say!("started {} ({})", vm.name, vm.guest_ip);
            }
        }
        VmCommand::Stop { vms, force } => {
            let query = if force { "?force=true" } else { "" };
            for name in vms {
                let vm: Vm = client
                    .post(&format!("/v1/vms/{}/stop{query}", path_segment(&name)), &())
                    .await?;
                say!("stopped {}", vm.name);
            }
        }
        VmCommand::Restart { vms } => {
            for name in vms {
                let vm: Vm = client
                    .post(&format!("/v1/vms/{}/restart", path_segment(&name)), &())
                    .await?;
                say!("restarted {} ({})", vm.name, vm.guest_ip);
            }
        }
        VmCommand::Run {
            create,
            rm,
            command,
        } => {
            let request = VmCreateRequest {
                ssh_keys: offered_keys()?,
                name: create.name.map(checked).transpose()?,
                image: create.image,
                vcpus: create.vcpus.map(|n| checked(u64::from(n))).transpose()?,
                memory_mib: create.memory.map(|n| checked(u64::from(n))).transpose()?,
                work_disk_bytes: disk_bytes(create.disk)?,
                system_disk_bytes: None,
                nat: create.nat,
                no_start: false,
                guest_ip: create.ip,
                remove_on_failure: rm,
                from: create.from.map(checked).transpose()?,
                cold: create.cold,
                publish: create.publish,
                mounts: create.mount,
            };
            let vm = create_watched(client, &request, false).await?;
            if !output::quiet() {
                eprintln!("{} is up at {} ({})", vm.name, vm.guest_ip, vm.dns_name);
            }
            let code = shell(client, &vm, command).await;
            if rm {
                let _: Vm = client
                    .delete(&format!("/v1/vms/{}?force=true", path_segment(&vm.name)))
                    .await?;
                if !output::quiet() {
                    eprintln!("removed {}", vm.name);
                }
            }
            std::process::exit(code?);
        }
        VmCommand::Snapshot { vm, name, json } => {
            crate::snapshot::take(client, &vm, name, json).await?;
        }
        VmCommand::Fork {
            vm,
            count,
            name,
            nat,
            json,
        } => {
            let nat = nat.map(|v| v == "on");
            crate::snapshot::fork(client, &vm, (Some(count), name, nat), json).await?;
        }
        VmCommand::Ssh { vm, command } => {
            let vm: Vm = client
                .get(&format!("/v1/vms/{}", path_segment(&vm)))
                .await?;
            let code = crate::ssh::run(client, &vm, &command).await?;
            std::process::exit(code);
        }
        VmCommand::Set { vm, nat } => {
            let request = VmUpdateRequest {
                nat: nat.map(|v| v == "on"),
            };
            let vm: Vm = client
                .patch(&format!("/v1/vms/{}", path_segment(&vm)), &request)
                .await?;
            say!("{}: nat {}", vm.name, if vm.nat { "on" } else { "off" });
        }
        VmCommand::Logs { vm, follow, raw } => {
            use std::io::{IsTerminal, Write};
            let query = if follow { "?follow=true" } else { "" };
            let mut stdout = std::io::stdout();
            // The guest's bytes reach a terminal only shown, never obeyed.
            let mut visible = (!raw && stdout.is_terminal()).then(crate::visible::Visible::default);
            client
                .get_stream(
                    &format!("/v1/vms/{}/logs{query}", path_segment(&vm)),
                    |bytes| {
                        let _ = match &mut visible {
                            Some(visible) => stdout.write_all(visible.push(bytes).as_bytes()),
                            None => stdout.write_all(bytes),
                        };
                        let _ = stdout.flush();
                    },
                )
                .await?;
            if let Some(visible) = &mut visible {
                let _ = stdout.write_all(visible.finish().as_bytes());
            }
        }
        VmCommand::Port(command) => ports(client, command).await?,
        VmCommand::Stats { vms, output } => crate::stats::run(client, vms, output).await?,
        VmCommand::Cp { src, dst, archive } => {
            crate::copy::run(client, &src, &dst, archive).await?
        }
        VmCommand::Exec {
            vm,
            interactive,
            tty,
            user,
            command,
        } => {
            let code = match (tty, command.is_empty()) {
                (true, true) => {
                    crate::terminal::run(client, &vm, vec!["/bin/sh".into()], user).await?
                }
                (true, false) => crate::terminal::run(client, &vm, command, user).await?,
                (false, true) => {
                    return Err(crate::client::bad_input(
                        "exec needs a command after --, or -it for a shell on a terminal",
                        "like `banger vm exec web -- uname -a` or `banger vm exec -it web`",
                    ))
                }
                (false, false) => crate::exec::run(client, &vm, command, user, interactive).await?,
            };
            std::process::exit(code);
        }
        VmCommand::Rm { vms, force } => {
            for name in vms {
                let query = if force { "?force=true" } else { "" };
                let vm: Vm = client
                    .delete(&format!("/v1/vms/{}{query}", path_segment(&name)))
                    .await?;
                say!("removed {}", vm.name);
            }
        }
    }
    Ok(())
}

/// `vm run`'s shell or command: over SSH when the image has sshd, else
/// on a terminal through the agent (an OCI image's own command when no
/// command is given).
async fn shell(client: &Client, vm: &Vm, command: Vec<String>) -> Result<i32> {
    let image: banger_proto::image::Image = client
        .get(&format!("/v1/images/{}", path_segment(&vm.image_id)))
        .await?;
    let sshd = image.manifest.as_ref().and_then(|m| m.sshd);
    if sshd == Some(false) {
        crate::terminal::run(client, &vm.name, command, None).await
    } else {
        crate::ssh::run(client, vm, &command).await
    }
}

/// The caller's own public key, offered to the VMs it creates (none for
/// root, whose VMs take the daemon's key).
fn offered_keys() -> Result<Vec<banger_proto::rules::SshPublicKey>> {
    crate::ssh::own_key()?
        .map(|own| checked(own.public))
        .into_iter()
        .collect()
}

/// Creates a VM showing each stage as it happens (nothing with `quiet`).
async fn create_watched(client: &Client, request: &VmCreateRequest, quiet: bool) -> Result<Vm> {
    let mut progress = crate::progress::Progress::new(quiet || output::quiet());
    match client
        .post_stream("/v1/vms", request, |event| progress.event(event))
        .await
    {
        Ok(banger_proto::progress::ProgressEvent::Vm { vm, elapsed_ms }) => {
            progress.finish(elapsed_ms);
            Ok(*vm)
        }
        Ok(_) => anyhow::bail!("bangerd answered the create with something else than a vm"),
        Err(err) => {
            progress.abandon();
            Err(err)
        }
    }
}

fn show(vm: &Vm) {
    let mut rows = vec![
        ("name", vm.name.clone()),
        ("id", vm.id.clone()),
        ("state", vm.state.as_str().to_string()),
        ("image", format!("{} ({})", vm.image_name, vm.image_id)),
        ("vcpus", vm.vcpus.to_string()),
        ("memory", format!("{} MiB", vm.memory_mib)),
        ("work disk", output::size(vm.work_disk_bytes)),
        ("system disk", output::size(vm.system_disk_bytes)),
        ("vmm", vm.vmm.clone()),
        ("nat", if vm.nat { "on" } else { "off" }.to_string()),
        ("address", vm.guest_ip.clone()),
        ("dns name", vm.dns_name.clone()),
        ("vsock cid", vm.vsock_cid.to_string()),
        ("created", vm.created_at.clone()),
        ("updated", vm.updated_at.clone()),
    ];
    if let Some(err) = &vm.last_error {
        rows.push(("last error", err.clone()));
    }
    let timings = |stages: &[banger_proto::vm::StageTiming]| {
        stages
            .iter()
            .map(|s| format!("{} {}ms", s.name, s.elapsed_ms))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !vm.create_stages.is_empty() {
        rows.push(("create", timings(&vm.create_stages)));
    }
    // A start after the create has stages of its own.
    if !vm.stages.is_empty() && vm.stages != vm.create_stages {
        rows.push(("last start", timings(&vm.stages)));
    }
    for (key, value) in rows {
        println!("{:<12} {value}", format!("{key}:"));
    }
}

/// Names are validated by the daemon; keep anything else from changing
/// the path's shape.
pub fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn ports(client: &Client, command: PortCommand) -> Result<()> {
    let print = |list: &PortList| {
        for port in &list.ports {
            println!("{port}");
        }
    };
    match command {
        PortCommand::Ls { vm, output } => {
            let list: PortList = client
                .get(&format!("/v1/vms/{}/ports", path_segment(&vm)))
                .await?;
            let rows: Vec<Vec<String>> = list
                .ports
                .iter()
                .map(|p| {
                    vec![
                        p.to_string(),
                        p.host_ip
                            .map_or_else(|| "127.0.0.1".into(), |ip| ip.to_string()),
                        p.host_port.get().to_string(),
                        p.guest_port.get().to_string(),
                        p.to_string().rsplit('/').next().unwrap_or("").to_string(),
                    ]
                })
                .collect();
            output::list(
                &output,
                &list,
                &[
                    col("PORT"),
                    wide("ADDRESS"),
                    wide("HOST PORT"),
                    wide("GUEST PORT"),
                    wide("PROTOCOL"),
                ],
                &rows,
            )?;
        }
        PortCommand::Add { vm, forward } => {
            let list: PortList = client
                .post(&format!("/v1/vms/{}/ports", path_segment(&vm)), &forward)
                .await?;
            print(&list);
        }
        PortCommand::Rm { vm, port } => {
            let (number, protocol) = port.split_once('/').unwrap_or((&port, "tcp"));
            let number: u64 = number.parse().map_err(|_| {
                crate::client::bad_input(
                    format!("bad port {port:?}: write HOST_PORT[/tcp|/udp]"),
                    "see `banger vm port ls VM` for the published ports",
                )
            })?;
            let number: banger_proto::rules::Port = checked(number)?;
            let list: PortList = client
                .delete(&format!(
                    "/v1/vms/{}/ports/{}?protocol={}",
                    path_segment(&vm),
                    number.get(),
                    path_segment(protocol)
                ))
                .await?;
            print(&list);
        }
    }
    Ok(())
}
