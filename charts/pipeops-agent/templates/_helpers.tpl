{{/*
Names. Every helper is prefixed with the chart name.
*/}}
{{- define "pipeops-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pipeops-agent.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pipeops-agent.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "pipeops-agent.labels" -}}
helm.sh/chart: {{ include "pipeops-agent.chart" . }}
{{ include "pipeops-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pipeops-agent
{{- end }}

{{/* Selector labels: only labels that never change over the release's life. */}}
{{- define "pipeops-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pipeops-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The agent's own identity: what the four containers use. */}}
{{- define "pipeops-agent.serviceAccountName" -}}
{{- include "pipeops-agent.fullname" . }}
{{- end }}

{{/* The identity whose token is handed to the control plane at registration. */}}
{{- define "pipeops-agent.controlPlaneServiceAccountName" -}}
{{- printf "%s-control-plane" (include "pipeops-agent.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Secret that holds the install token: the chart's own or an existing one. */}}
{{- define "pipeops-agent.tokenSecretName" -}}
{{- if .Values.pipeops.existingSecret }}
{{- .Values.pipeops.existingSecret }}
{{- else }}
{{- printf "%s-token" (include "pipeops-agent.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
The registrar's durable identity in the release namespace: names it derives from config
agent.name (services/registrar kube.StateObjects), which the chart renders from
agent.name; the agent's Role grants exactly these two by name.
*/}}
{{- define "pipeops-agent.stateSecretName" -}}{{ printf "%s-state" .Values.agent.name }}{{- end }}
{{- define "pipeops-agent.identityConfigMapName" -}}{{ printf "%s-identity" .Values.agent.name }}{{- end }}

{{/* Image reference of one container: (dict "root" $ "c" .Values.registrar) */}}
{{- define "pipeops-agent.image" -}}
{{- $registry := .root.Values.image.registry | trimSuffix "/" }}
{{- $tag := default .root.Chart.AppVersion .c.image.tag }}
{{- if $registry }}
{{- printf "%s/%s:%s" $registry .c.image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .c.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Where things are mounted: the same paths in the ConfigMap and the pod. */}}
{{- define "pipeops-agent.configDir" -}}/etc/pipeops{{- end }}
{{- define "pipeops-agent.controlPlaneTokenDir" -}}/var/run/secrets/pipeops/control-plane{{- end }}
{{- define "pipeops-agent.serviceAccountDir" -}}/var/run/secrets/kubernetes.io/serviceaccount{{- end }}

{{/* Whether the gateway feature makes the agent write Gateway API / Istio objects. */}}
{{- define "pipeops-agent.agentManagesGateway" -}}
{{- $g := .Values.features.gateway }}
{{- if and $g.enabled (eq $g.managedBy "agent") }}true{{- end }}
{{- end }}

{{/* Metrics servers listen on the pod IP only when a ServiceMonitor scrapes them. */}}
{{- define "pipeops-agent.metricsHost" -}}
{{- if .Values.serviceMonitor.enabled }}0.0.0.0{{- else }}127.0.0.1{{- end }}
{{- end }}

{{/* Cross-field checks the schema cannot express; a clear message on failure. */}}
{{- define "pipeops-agent.validate" -}}
{{- if and .Values.pipeops.token .Values.pipeops.existingSecret }}
{{- fail "set pipeops.token or pipeops.existingSecret, not both" }}
{{- end }}
{{- /* int: values files give float64, --set gives int64, and uniq compares types too. */}}
{{- $ports := list }}
{{- range list .Values.registrar.grpcPort .Values.tunnel.grpcPort .Values.gateway.grpcPort .Values.httpApi.grpcPort .Values.registrar.probePort .Values.tunnel.probePort .Values.gateway.probePort .Values.httpApi.port .Values.registrar.metricsPort .Values.tunnel.metricsPort .Values.gateway.metricsPort }}
{{- $ports = append $ports (int .) }}
{{- end }}
{{- if ne (len $ports) (len (uniq $ports)) }}
{{- fail (printf "every container port must differ (they share the pod's network): %v" $ports) }}
{{- end }}
{{- /* On 1.28 without the SidecarContainers gate the API server drops restartPolicy, and
the registrar would become an init container that never ends: the pod would hang in Init. */}}
{{- if and .Values.features.nativeSidecar (semverCompare "<1.29.0-0" .Capabilities.KubeVersion.Version) }}
{{- fail (printf "features.nativeSidecar needs Kubernetes 1.29 or later (this cluster is %s): set features.nativeSidecar=false" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- $g := .Values.features.gateway }}
{{- if $g.enabled }}
{{- if and (eq $g.environment.mode "single-vm") (not $g.environment.vmIp) }}
{{- fail "features.gateway.environment.vmIp is required when features.gateway.environment.mode is single-vm" }}
{{- end }}
{{- if not (or $g.istio.enabled $g.gatewayApi.enabled) }}
{{- fail "features.gateway.enabled needs features.gateway.istio.enabled or features.gateway.gatewayApi.enabled" }}
{{- end }}
{{- if and $g.gatewayApi.enabled (not $g.gatewayApi.listeners) }}
{{- fail "features.gateway.gatewayApi.listeners needs at least one listener when gatewayApi is enabled" }}
{{- end }}
{{- $tcp := list }}
{{- $udp := list }}
{{- range $g.gatewayApi.listeners }}
{{- $proto := default "TCP" .protocol }}
{{- $name := default (printf "%s-%v" (lower $proto) .port) .name }}
{{- if eq $proto "TCP" }}{{ $tcp = append $tcp $name }}{{ else }}{{ $udp = append $udp $name }}{{ end }}
{{- end }}
{{- range $g.gatewayApi.tcpRoutes }}
{{- if not (has .sectionName $tcp) }}
{{- fail (printf "features.gateway.gatewayApi.tcpRoutes %s: sectionName %s is not a TCP listener (%v)" .name .sectionName $tcp) }}
{{- end }}
{{- end }}
{{- range $g.gatewayApi.udpRoutes }}
{{- if not (has .sectionName $udp) }}
{{- fail (printf "features.gateway.gatewayApi.udpRoutes %s: sectionName %s is not a UDP listener (%v)" .name .sectionName $udp) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Secret holding the dashboard token (key: token). */}}
{{- define "pipeops-agent.dashboardSecretName" -}}
{{- if .Values.httpApi.existingDashboardSecret }}
{{- .Values.httpApi.existingDashboardSecret }}
{{- else }}
{{- printf "%s-dashboard" (include "pipeops-agent.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
