{{/*
Pieces of the pod spec shared by the four containers.
*/}}

{{/* The container securityContext: every container, no exceptions. */}}
{{- define "pipeops-agent.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Env every container gets: the pod's identity from the downward API. */}}
{{- define "pipeops-agent.commonEnv" -}}
- name: PIPEOPS_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: PIPEOPS_NODE_IP
  valueFrom:
    fieldRef:
      fieldPath: status.hostIP
- name: PIPEOPS_POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end }}

{{/*
Mounts: the config, the shared state volume at agent.stateDir, and a private /tmp carved
out of the same emptyDir by subPath so every root filesystem stays read-only.
(dict "root" $ "name" "registrar" "kubeApi" true "controlPlaneToken" false)
*/}}
{{- define "pipeops-agent.volumeMounts" -}}
- name: config
  mountPath: {{ include "pipeops-agent.configDir" .root }}
  readOnly: true
- name: state
  mountPath: {{ .root.Values.agent.stateDir }}
- name: scratch
  mountPath: /tmp
  subPath: {{ .name }}
{{- if .kubeApi }}
- name: kube-api-access
  mountPath: {{ include "pipeops-agent.serviceAccountDir" .root }}
  readOnly: true
{{- end }}
{{- if .controlPlaneToken }}
- name: control-plane-token
  mountPath: {{ include "pipeops-agent.controlPlaneTokenDir" .root }}
  readOnly: true
{{- end }}
{{- end }}

{{/*
A kubelet gRPC probe on grpc.health.v1 (the overall status, service ""), sent to the
container's health-only listener (probePort on grpc.probeHost): the service's own gRPC
server listens on localhost, which the kubelet cannot reach.
*/}}
{{- define "pipeops-agent.grpcProbes" -}}
startupProbe:
  grpc:
    port: {{ .c.probePort }}
  periodSeconds: 2
  failureThreshold: {{ .c.probes.startupFailureThreshold }}
livenessProbe:
  grpc:
    port: {{ .c.probePort }}
  periodSeconds: {{ .c.probes.periodSeconds }}
  failureThreshold: {{ .c.probes.failureThreshold }}
  timeoutSeconds: 2
{{- end }}

{{/*
One agent container: (dict "root" $ "name" "tunnel" "c" .Values.tunnel "kubeApi" true
"controlPlaneToken" false "ports" (list ...) "env" (list ...) "probes" "...")
*/}}
{{- define "pipeops-agent.container" -}}
- name: {{ .name }}
  image: {{ include "pipeops-agent.image" (dict "root" .root "c" .c) }}
  imagePullPolicy: {{ .c.image.pullPolicy }}
  args: ["--config", "{{ include "pipeops-agent.configDir" .root }}/config.yaml"]
  {{- if .sidecar }}
  restartPolicy: Always
  {{- end }}
  env:
    {{- include "pipeops-agent.commonEnv" .root | nindent 4 }}
    {{- with .env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with .c.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    {{- toYaml .ports | nindent 4 }}
  {{- .probes | nindent 2 }}
  resources:
    {{- toYaml .c.resources | nindent 4 }}
  securityContext:
    {{- include "pipeops-agent.containerSecurityContext" .root | nindent 4 }}
  volumeMounts:
    {{- include "pipeops-agent.volumeMounts" . | nindent 4 }}
{{- end }}

{{/* The http-api: HTTP /health for liveness, /ready for readiness. */}}
{{- define "pipeops-agent.httpProbes" -}}
startupProbe:
  httpGet:
    path: /health
    port: http
  periodSeconds: 2
  failureThreshold: {{ .c.probes.startupFailureThreshold }}
livenessProbe:
  httpGet:
    path: /health
    port: http
  periodSeconds: {{ .c.probes.periodSeconds }}
  failureThreshold: {{ .c.probes.failureThreshold }}
  timeoutSeconds: 2
readinessProbe:
  httpGet:
    path: /ready
    port: http
  periodSeconds: {{ .c.probes.periodSeconds }}
  failureThreshold: {{ .c.probes.failureThreshold }}
  timeoutSeconds: 2
{{- end }}
