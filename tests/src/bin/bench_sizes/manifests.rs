//! Kubernetes-style manifests and site inventories for the generated fleet repository:
//! files of one kind share their boilerplate, as real manifests do, and differ in names,
//! environment, resources, serial numbers and addresses.

use crate::content::{ident, ipv4, push_line, scalar, semver, sentence, upper_ident, MODELS, WORDS};
use crate::rng::Rng;

/// `template` with every `{name}` replaced by its value.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    values.iter().fold(template.to_owned(), |text, (name, value)| text.replace(&format!("{{{name}}}"), value))
}

const DEPLOYMENT_HEAD: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {service}
  namespace: {team}
  labels:
    app.kubernetes.io/name: {service}
    app.kubernetes.io/part-of: fleet
    app.kubernetes.io/managed-by: ferry
    team: {team}
spec:
  replicas: {replicas}
  revisionHistoryLimit: 3
  selector:
    matchLabels:
      app.kubernetes.io/name: {service}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {service}
        team: {team}
      annotations:
        checksum/config: {checksum}
        prometheus.io/scrape: "true"
        prometheus.io/port: "{metrics_port}"
    spec:
      serviceAccountName: {service}
      securityContext:
        runAsNonRoot: true
        runAsUser: {uid}
        fsGroup: {gid}
      containers:
        - name: {service}
          image: registry.fleet.example.net/{team}/{service}:{version}
          imagePullPolicy: IfNotPresent
          args: ["--config", "/etc/{service}/app.toml", "--log-format", "json"]
          ports:
"#;

const DEPLOYMENT_TAIL: &str = r#"          resources:
            requests:
              cpu: {cpu_request}m
              memory: {memory_request}Mi
            limits:
              cpu: {cpu_limit}m
              memory: {memory_limit}Mi
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            initialDelaySeconds: {initial_delay}
            periodSeconds: {period}
          readinessProbe:
            httpGet:
              path: /ready
              port: http
            periodSeconds: {ready_period}
          volumeMounts:
            - name: config
              mountPath: /etc/{service}
              readOnly: true
            - name: data
              mountPath: /var/lib/{service}
      volumes:
        - name: config
          configMap:
            name: {service}-config
        - name: data
          persistentVolumeClaim:
            claimName: {service}-data
"#;

const SERVICE_HEAD: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: {service}
  namespace: {team}
  labels:
    app.kubernetes.io/name: {service}
spec:
  type: ClusterIP
  selector:
    app.kubernetes.io/name: {service}
  ports:
"#;

const AUTOSCALER: &str = r#"apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {service}
  namespace: {team}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {service}
  minReplicas: {min}
  maxReplicas: {max}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {target}
"#;

/// A Kubernetes Deployment for `service`, with a long, service-specific environment.
pub fn deployment(rng: &mut Rng, service: &str, team: &str, version: &str) -> String {
    let mut s = String::new();
    let replicas = rng.range(1, 5).to_string();
    let checksum = rng.hex(64);
    let metrics_port = rng.range(9000, 9999).to_string();
    let uid = rng.range(1000, 65000).to_string();
    let gid = rng.range(1000, 65000).to_string();
    let header = fill(
        DEPLOYMENT_HEAD,
        &[
            ("service", service),
            ("team", team),
            ("version", version),
            ("replicas", &replicas),
            ("checksum", &checksum),
            ("metrics_port", &metrics_port),
            ("uid", &uid),
            ("gid", &gid),
        ],
    );
    s.push_str(&header);
    for _ in 0..rng.range(1, 3) {
        push_line(&mut s, 12, &format!("- name: {}", rng.word(&["http", "metrics", "grpc", "admin", "modbus"])));
        push_line(&mut s, 14, &format!("containerPort: {}", rng.range(1024, 65000)));
        push_line(&mut s, 14, "protocol: TCP");
    }
    push_line(&mut s, 10, "env:");
    for _ in 0..rng.range(4, 36) {
        push_line(&mut s, 12, &format!("- name: {}", upper_ident(rng)));
        if rng.chance(0.2) {
            push_line(&mut s, 14, "valueFrom:");
            push_line(&mut s, 16, "secretKeyRef:");
            push_line(&mut s, 18, &format!("name: {service}-{}", rng.word(&WORDS[10..])));
            push_line(&mut s, 18, &format!("key: {}", ident(rng)));
        } else {
            push_line(&mut s, 14, &format!("value: {}", scalar(rng).replace('"', "'")));
        }
    }
    let numbers: Vec<String> = [(1, 40, 25), (1, 32, 32), (2, 80, 25), (2, 64, 32), (5, 60, 1), (5, 30, 1), (5, 30, 1)]
        .iter()
        .map(|&(lo, hi, unit)| (rng.range(lo, hi) * unit).to_string())
        .collect();
    let names =
        ["cpu_request", "memory_request", "cpu_limit", "memory_limit", "initial_delay", "period", "ready_period"];
    let mut values: Vec<(&str, &str)> = names.iter().copied().zip(numbers.iter().map(String::as_str)).collect();
    values.push(("service", service));
    let footer = fill(DEPLOYMENT_TAIL, &values);
    s.push_str(&footer);
    s
}

/// A Service, ConfigMap or autoscaler manifest: short and mostly boilerplate.
pub fn small_manifest(rng: &mut Rng, service: &str, team: &str, which: usize) -> String {
    let mut s = String::new();
    match which % 3 {
        0 => {
            s.push_str(&fill(SERVICE_HEAD, &[("service", service), ("team", team)]));
            for _ in 0..rng.range(1, 3) {
                let port = rng.range(1024, 65000);
                s.push_str(&format!("    - name: {}\n      port: {port}\n      targetPort: {port}\n", ident(rng)));
            }
        }
        1 => {
            s.push_str(&format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {service}-config\n  namespace: {team}\ndata:\n"
            ));
            for _ in 0..rng.range(3, 30) {
                s.push_str(&format!("  {}: {}\n", ident(rng), scalar(rng)));
            }
        }
        _ => {
            let (min, max, target) = (rng.range(1, 3), rng.range(3, 12), rng.range(40, 90));
            let (min, max, target) = (min.to_string(), max.to_string(), target.to_string());
            let values = [("service", service), ("team", team), ("min", &min), ("max", &max), ("target", &target)];
            s.push_str(&fill(AUTOSCALER, &values));
        }
    }
    s
}

/// A site's device inventory: many similar records with serials, addresses and labels.
pub fn inventory(rng: &mut Rng, site: &str, region: &str, devices: usize) -> String {
    let mut s = format!(
        "# Device inventory for {site} ({region}). Generated from the asset register; edit by hand only\n\
         # for devices not yet in the register.\nsite: {site}\nregion: {region}\ntimezone: Europe/{}\n\
         coordinates: {{ lat: {:.5}, lon: {:.5} }}\ndevices:\n",
        rng.pick(&["Oslo", "Berlin", "Paris", "Madrid", "Rome", "Warsaw", "Lisbon", "Vienna"]),
        40.0 + rng.unit() * 30.0,
        -10.0 + rng.unit() * 40.0
    );
    for i in 0..devices {
        let model = rng.word(MODELS);
        s.push_str(&format!(
            "  - id: {site}-{i:03}\n    model: {model}\n    serial: {}\n    mac: 00:1b:{}:{}:{}:{}\n    ip: {}\n    \
             firmware: {}\n    labels:\n      role: {}\n      zone: {}\n      criticality: {}\n",
            rng.hex(12).to_uppercase(),
            rng.hex(2),
            rng.hex(2),
            rng.hex(2),
            rng.hex(2),
            ipv4(rng),
            semver(rng),
            rng.word(&WORDS[180..]),
            rng.range(1, 12),
            rng.pick(&["low", "medium", "high"]),
        ));
        if rng.chance(0.3) {
            s.push_str(&format!("    notes: \"{}\"\n", sentence(rng)));
        }
    }
    s
}
