{{/*
The agent's config file (agentkit.config.Config), rendered from values. Every port and
every sibling address comes from the same values the pod spec uses, so they cannot drift.
No secret is ever rendered here: the install token reaches the registrar as env
PIPEOPS_TOKEN from a Secret.
*/}}
{{- define "pipeops-agent.config" -}}
{{- $v := .Values }}
{{- $forwards := list }}
{{- if $v.tunnel.forwardApiServer }}
{{- $forwards = append $forwards (dict "name" "kubernetes-api" "local_addr" "kubernetes.default.svc:443" "remote_port" 0) }}
{{- end }}
{{- if $v.tunnel.forwardKubelet }}
{{- /* NODE_IP is agent.node_ip, which PIPEOPS_NODE_IP sets from status.hostIP. */}}
{{- $forwards = append $forwards (dict "name" "kubelet" "local_addr" "NODE_IP:10250" "remote_port" 0) }}
{{- end }}
{{- if $v.tunnel.forwardAgentHttp }}
{{- $forwards = append $forwards (dict "name" "agent-http" "local_addr" (printf "127.0.0.1:%v" $v.httpApi.port) "remote_port" 0) }}
{{- end }}
{{- range $v.tunnel.extraForwards }}
{{- $forwards = append $forwards (dict "name" .name "local_addr" .localAddr "remote_port" (default 0 .remotePort)) }}
{{- end }}
{{- $g := $v.features.gateway }}
{{- $agentGateway := eq (include "pipeops-agent.agentManagesGateway" .) "true" }}
{{- $config := dict
  "agent" (dict
    "name" $v.agent.name
    "cluster_name" $v.pipeops.clusterName
    "labels" $v.agent.labels
    "port" $v.httpApi.port
    "host" "0.0.0.0"
    "enable_ingress_sync" $v.features.ingressSync
    "state_dir" $v.agent.stateDir)
  "pipeops" (dict
    "api_url" $v.pipeops.apiUrl
    "timeout" $v.pipeops.timeout
    "heartbeat_interval" $v.pipeops.heartbeatInterval
    "tls" (dict "insecure_skip_verify" $v.pipeops.insecureSkipVerify))
  "tunnel" (dict
    "enabled" $v.tunnel.enabled
    "sessions" (dict "enabled" $v.tunnel.sessions)
    "forwards" $forwards)
  "kubernetes" (dict
    "in_cluster" true
    "namespace" .Release.Namespace
    "session_namespace" $v.agent.sessionNamespace
    "service_account_token_path" (printf "%s/token" (include "pipeops-agent.serviceAccountDir" .))
    "control_plane_token_path" (printf "%s/token" (include "pipeops-agent.controlPlaneTokenDir" .)))
  "logging" (dict "level" $v.agent.logLevel "format" $v.agent.logFormat)
  "gateway" (dict
    "ingress_classes" $v.features.routeSync.ingressClasses
    "ingress_controller" $v.features.routeSync.ingressController
    "http_routes" $v.features.routeSync.httpRoutes
    "routing_mode" $v.features.routeSync.routingMode
    "public_endpoint" $v.features.routeSync.publicEndpoint
    "sync_batch_size" $v.features.routeSync.batchSize
    "resync_interval" $v.features.routeSync.resyncInterval
    "mass_delete_share" $v.features.routeSync.massDeleteShare
    "mass_delete_min" $v.features.routeSync.massDeleteMin
    "allow_mass_delete" $v.features.routeSync.allowMassDelete
    "enabled" $agentGateway
    "environment" (dict "mode" $g.environment.mode "vm_ip" $g.environment.vmIp)
    "istio" (dict
      "enabled" (and $agentGateway $g.istio.enabled)
      "selector" $g.istio.selector
      "service" (dict "create" $g.istio.service.create "namespace" $g.istio.service.namespace)
      "servers" $g.istio.servers
      "tcp_routes" $g.istio.tcpRoutes
      "tls_routes" $g.istio.tlsRoutes)
    "gateway_api" (dict
      "enabled" (and $agentGateway $g.gatewayApi.enabled)
      "gateway_class" $g.gatewayApi.gatewayClass
      "listeners" $g.gatewayApi.listeners
      "tcp_routes" $g.gatewayApi.tcpRoutes
      "udp_routes" $g.gatewayApi.udpRoutes))
  "grpc" (dict
    "host" $v.grpc.host
    "registrar" $v.registrar.grpcPort
    "tunnel" $v.tunnel.grpcPort
    "gateway" $v.gateway.grpcPort
    "http_api" $v.httpApi.grpcPort
    "deadline" $v.grpc.deadline
    "probe_host" $v.grpc.probeHost
    "registrar_probe" $v.registrar.probePort
    "tunnel_probe" $v.tunnel.probePort
    "gateway_probe" $v.gateway.probePort)
  "metrics" (dict
    "host" (include "pipeops-agent.metricsHost" .)
    "registrar" $v.registrar.metricsPort
    "tunnel" $v.tunnel.metricsPort
    "gateway" $v.gateway.metricsPort)
}}
{{- toYaml $config }}
{{- end }}
