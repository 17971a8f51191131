//! Pods without Kubernetes, for running what the operator renders exactly as it renders it.
//!
//! Each pod is a network namespace with its own address on a bridge and an /etc/hosts that
//! names every pod (`<pod>.<headless service>.<ns>.svc`) and Service (`<svc>.<ns>.svc`, every
//! pod it selects). Its container runs in a private mount namespace where each volume the pod
//! spec mounts is bind-mounted at its mount path (ConfigMaps and Secrets written from the
//! rendered objects, emptyDirs and claims as directories that outlive a container restart),
//! with the spec's environment (downward-API fields included) and the spec's command. So the
//! start scripts, probes and configuration files run byte for byte as in a cluster; only the
//! image differs (Debian's `redis-server`, and the shim binary for the shim's container).
//!
//! Needs root (namespaces, mounts) and `ip` from iproute2; [`Network::create`] says why not
//! where they are missing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, PodSpec, Secret};
use redsess_operator::build::Emitted;

static NETWORKS: AtomicU32 = AtomicU32::new(0);

/// A bridge and the namespaces attached to it; everything is removed on drop.
pub struct Network {
    id: String,
    bridge: String,
    /// The /24's first three octets, e.g. "10.83.2".
    subnet: String,
    root: tempfile::TempDir,
    objects: Vec<Emitted>,
    /// (pod name, DNS names) in address order: pod N has address `.N+1`.
    hosts: Vec<(String, Vec<String>)>,
}

/// One running pod: its container's process and where its volumes live.
pub struct Pod {
    pub name: String,
    pub ip: String,
    netns: String,
    spec: PodSpec,
    volumes: PathBuf,
    env: Vec<(String, String)>,
    program: Option<PathBuf>,
    child: Option<Child>,
    pub log: Arc<Mutex<String>>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip (iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Network {
    /// A bridge for the pods of `objects` (the operator's rendered objects); `Err` says why
    /// this machine cannot (not root, no iproute2).
    pub fn create(objects: Vec<Emitted>) -> Result<Network, String> {
        if effective_uid() != 0 {
            return Err("pods need root (network and mount namespaces)".into());
        }
        let n = NETWORKS.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:04x}{n:x}", std::process::id() % 0xffff);
        let subnet = format!("10.{}.{}", 100 + std::process::id() % 100, n % 250);
        let bridge = format!("rsb{id}");
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        let network = Network {
            id,
            bridge,
            subnet,
            root: tempfile::Builder::new()
                .prefix("redsess-pods-")
                .tempdir_in("/var/tmp")
                .map_err(|e| format!("cannot make a directory in /var/tmp: {e}"))?,
            hosts: pod_names(&objects),
            objects,
        };
        ip(&["link", "set", &network.bridge, "up"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}.254/24", network.subnet),
            "dev",
            &network.bridge,
        ])?;
        Ok(network)
    }

    /// The address of `pod` (one the rendered objects make).
    pub fn address(&self, pod: &str) -> String {
        let index = self
            .hosts
            .iter()
            .position(|(name, _)| name == pod)
            .unwrap_or_else(|| panic!("no pod {pod} in the rendered objects"));
        format!("{}.{}", self.subnet, index + 1)
    }

    fn hosts_file(&self) -> String {
        let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for (pod, names) in &self.hosts {
            text.push_str(&format!("{} {}\n", self.address(pod), names.join(" ")));
        }
        text
    }

    fn rendered<T: 'static>(&self, kind: &str, name: &str, pick: impl Fn(&Emitted) -> Option<&T>) -> &T {
        self.objects
            .iter()
            .filter(|o| o.kind() == kind && o.name() == name)
            .find_map(pick)
            .unwrap_or_else(|| panic!("no {kind} {name} among the rendered objects"))
    }

    /// Starts pod `ordinal` of the rendered StatefulSet `set`.
    pub fn start_stateful(&self, set: &str, ordinal: usize) -> Pod {
        let sts = self.rendered("StatefulSet", set, |o| match o {
            Emitted::StatefulSet(s) => Some(s),
            _ => None,
        });
        let spec = sts.spec.as_ref().unwrap();
        let mut pod = spec.template.spec.clone().unwrap();
        // Claims become directories of the pod, like emptyDirs (they outlive a restart too).
        for claim in spec.volume_claim_templates.iter().flatten() {
            pod.volumes
                .get_or_insert_with(Vec::new)
                .push(k8s_openapi::api::core::v1::Volume {
                    name: claim.metadata.name.clone().unwrap(),
                    empty_dir: Some(Default::default()),
                    ..Default::default()
                });
        }
        self.start(&format!("{set}-{ordinal}"), pod, None)
    }

    /// Starts the rendered Deployment `name`'s pod as `pod`, its container running `program`
    /// (the image's entrypoint).
    pub fn start_deployment(&self, name: &str, pod: &str, program: &Path) -> Pod {
        let d = self.rendered("Deployment", name, |o| match o {
            Emitted::Deployment(d) => Some(d),
            _ => None,
        });
        let spec = d.spec.as_ref().unwrap().template.spec.clone().unwrap();
        self.start(pod, spec, Some(program.to_path_buf()))
    }

    fn start(&self, name: &str, spec: PodSpec, program: Option<PathBuf>) -> Pod {
        let index = self.hosts.iter().position(|(n, _)| n == name).unwrap();
        let ip_addr = self.address(name);
        let volumes = self.root.path().join(name);
        let namespace = self.objects[0].to_json()["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let env = self.container_env(&spec.containers[0], name, &ip_addr, &namespace);
        self.write_volumes(&spec, &volumes);

        let netns = format!("rs{}-{index}", self.id);
        let veth = format!("rsv{}{index}", self.id);
        let etc = PathBuf::from("/etc/netns").join(&netns);
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("hosts"), self.hosts_file()).unwrap();
        ip(&["netns", "add", &netns]).unwrap();
        let mut pod = Pod {
            name: name.to_string(),
            ip: ip_addr.clone(),
            netns: netns.clone(),
            spec,
            volumes,
            env,
            program,
            child: None,
            log: Arc::new(Mutex::new(String::new())),
        };
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ])
        .unwrap();
        ip(&["link", "set", &veth, "master", &self.bridge, "up"]).unwrap();
        for args in [
            vec!["addr", "add", &format!("{ip_addr}/24"), "dev", "eth0"],
            vec!["link", "set", "eth0", "up"],
            vec!["link", "set", "lo", "up"],
        ] {
            let mut full = vec!["netns", "exec", &netns, "ip"];
            full.extend(args);
            ip(&full).unwrap();
        }
        pod.run();
        pod
    }

    /// The container's environment as the kubelet would give it: plain values, keys of the
    /// rendered Secrets, and the downward API's pod name, namespace and IP.
    fn container_env(&self, c: &Container, pod: &str, ip: &str, namespace: &str) -> Vec<(String, String)> {
        let mut out = vec![(
            "PATH".to_string(),
            "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".to_string(),
        )];
        for e in c.env.iter().flatten() {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(from)) if from.secret_key_ref.is_some() => {
                    let key = from.secret_key_ref.as_ref().unwrap();
                    let data = secret_data(self.rendered("Secret", &key.name, |o| match o {
                        Emitted::Secret(s) => Some(s),
                        _ => None,
                    }));
                    data[&key.key].clone()
                }
                (None, Some(from)) => match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                    Some("metadata.name") => pod.to_string(),
                    Some("metadata.namespace") => namespace.to_string(),
                    Some("status.podIP") => ip.to_string(),
                    other => panic!("{}: no such downward-API field here: {other:?}", e.name),
                },
                (None, None) => String::new(),
            };
            out.push((e.name.clone(), value));
        }
        out
    }

    /// ConfigMap, Secret and projected Secret volumes as files (from the rendered objects),
    /// others as directories.
    fn write_volumes(&self, spec: &PodSpec, dir: &Path) {
        for volume in spec.volumes.iter().flatten() {
            let path = dir.join(&volume.name);
            std::fs::create_dir_all(&path).unwrap();
            let files: BTreeMap<String, String> = if let Some(cm) = &volume.config_map {
                let name = cm.name.clone();
                self.rendered("ConfigMap", &name, |o| match o {
                    Emitted::ConfigMap(c) => c.data.as_ref(),
                    _ => None,
                })
                .clone()
            } else if let Some(secret) = &volume.secret {
                let name = secret.secret_name.clone().unwrap();
                let data = secret_data(self.rendered("Secret", &name, |o| match o {
                    Emitted::Secret(s) => Some(s),
                    _ => None,
                }));
                match &secret.items {
                    Some(items) => items.iter().map(|i| (i.path.clone(), data[&i.key].clone())).collect(),
                    None => data,
                }
            } else if let Some(projected) = &volume.projected {
                let mut files = BTreeMap::new();
                for source in projected.sources.iter().flatten() {
                    let secret = source.secret.as_ref().expect("projected Secrets only");
                    let data = secret_data(self.rendered("Secret", &secret.name, |o| match o {
                        Emitted::Secret(s) => Some(s),
                        _ => None,
                    }));
                    for item in secret.items.iter().flatten() {
                        files.insert(item.path.clone(), data[&item.key].clone());
                    }
                }
                files
            } else {
                BTreeMap::new()
            };
            for (file, content) in files {
                std::fs::write(path.join(file), content).unwrap();
            }
        }
    }
}

fn secret_data(secret: &Secret) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = secret.string_data.clone().unwrap_or_default();
    for (k, v) in secret.data.iter().flatten() {
        out.insert(k.clone(), String::from_utf8_lossy(&v.0).into_owned());
    }
    out
}

/// Every pod the rendered StatefulSets and Deployments make, with its DNS names: pod `N` of a
/// StatefulSet is `<set>-N.<serviceName>.<ns>.svc`; a Deployment has one pod, `<name>-0`. Each
/// Service's name goes to every pod its selector picks.
fn pod_names(objects: &[Emitted]) -> Vec<(String, Vec<String>)> {
    let mut pods: Vec<(String, BTreeMap<String, String>, Vec<String>)> = Vec::new();
    let namespace =
        |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| meta.namespace.clone().unwrap_or_default();
    for o in objects {
        match o {
            Emitted::StatefulSet(s) => {
                let spec = s.spec.as_ref().unwrap();
                let labels = spec.template.metadata.as_ref().unwrap().labels.clone().unwrap();
                let ns = namespace(&s.metadata);
                let service = spec.service_name.clone().unwrap_or_default();
                for i in 0..spec.replicas.unwrap_or(1) {
                    let pod = format!("{}-{i}", o.name());
                    pods.push((
                        pod.clone(),
                        labels.clone(),
                        vec![format!("{pod}.{service}.{ns}.svc"), pod],
                    ));
                }
            }
            Emitted::Deployment(d) => {
                let spec = d.spec.as_ref().unwrap();
                let labels = spec.template.metadata.as_ref().unwrap().labels.clone().unwrap();
                let pod = format!("{}-0", o.name());
                pods.push((pod.clone(), labels, vec![pod]));
            }
            _ => {}
        }
    }
    for o in objects {
        if let Emitted::Service(s) = o {
            let selector = s.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
            let host = format!("{}.{}.svc", o.name(), namespace(&s.metadata));
            for (_, labels, names) in &mut pods {
                if !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                    names.push(host.clone());
                }
            }
        }
    }
    pods.into_iter().map(|(pod, _, names)| (pod, names)).collect()
}

fn effective_uid() -> u32 {
    // `id -u` rather than libc: one process per network, not worth a dependency.
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(u32::MAX)
}

/// Single-quoted for sh.
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Pod {
    /// Starts (or, after [`Pod::kill`], restarts) the container, volumes kept.
    pub fn run(&mut self) {
        let container = self.spec.containers[0].clone();
        let mut script = String::from("set -e\n");
        let mut mounts: Vec<_> = container.volume_mounts.iter().flatten().collect();
        // A mount over /tmp last, so that it cannot hide the sources of the others.
        mounts.sort_by_key(|m| m.mount_path == "/tmp");
        for m in mounts {
            let source = self.volumes.join(&m.name);
            std::fs::create_dir_all(&m.mount_path)
                .unwrap_or_else(|e| panic!("cannot make the mount point {}: {e}", m.mount_path));
            script.push_str(&format!(
                "mount --bind {} {}\n",
                quoted(&source.display().to_string()),
                quoted(&m.mount_path)
            ));
            if m.read_only == Some(true) {
                script.push_str(&format!("mount -o remount,bind,ro {}\n", quoted(&m.mount_path)));
            }
        }
        let command: Vec<String> = match (&container.command, &self.program) {
            (Some(command), _) => command.iter().chain(container.args.iter().flatten()).cloned().collect(),
            (None, Some(program)) => std::iter::once(program.display().to_string())
                .chain(container.args.iter().flatten().cloned())
                .collect(),
            (None, None) => panic!("{}: the container has no command and no program was given", self.name),
        };
        script.push_str("exec");
        for word in &command {
            script.push(' ');
            script.push_str(&quoted(word));
        }
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.netns, "sh", "-c", &script])
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ip netns exec");
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = self.log.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        self.child = Some(child);
    }

    /// Kills the container at once (SIGKILL), as a lost node would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `command` inside the container (its network and mounts), as `kubectl exec` would.
    pub fn exec(&self, command: &[&str]) -> Output {
        let pid = self.child.as_ref().expect("the container runs").id().to_string();
        Command::new("nsenter")
            .args(["-t", &pid, "-m", "-n", "--"])
            .args(command)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("nsenter")
    }

    /// Whether the readiness probe's command succeeds now.
    pub fn ready(&self) -> bool {
        let probe = self.spec.containers[0].readiness_probe.as_ref();
        let command = probe
            .and_then(|p| p.exec.as_ref())
            .and_then(|e| e.command.clone())
            .unwrap_or_else(|| panic!("{}: no exec readiness probe", self.name));
        let words: Vec<&str> = command.iter().map(String::as_str).collect();
        self.exec(&words).status.success()
    }

    /// Waits until the readiness probe passes.
    pub fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.ready() {
            assert!(
                Instant::now() < deadline,
                "{} is not ready after {within:?}:\n{}",
                self.name,
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.kill();
        let _ = ip(&["netns", "del", &self.netns]);
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.netns));
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.bridge]);
    }
}
