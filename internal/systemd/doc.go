// Package systemd speaks the two service-manager protocols hostproxy needs,
// without linking a client library: readiness notification (sd_notify(3):
// datagrams such as "READY=1" on $NOTIFY_SOCKET) and socket activation
// (sd_listen_fds(3): sockets inherited as fd 3 onwards, announced by
// $LISTEN_PID and $LISTEN_FDS).
//
// Both read their environment variables once and unset them, so that no
// process hostproxy might start inherits a socket or a notification address
// meant for hostproxy itself.
package systemd
