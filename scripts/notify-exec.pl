#!/usr/bin/perl
# notify-exec.pl COMMAND [ARG...] — runs COMMAND in this very process (exec: same PID) with a
# datagram socket connected to systemd's $NOTIFY_SOCKET, inherited as the descriptor named by
# $EDGEWAY_NOTIFY_FD. /usr/local/bin/edgeway (written by scripts/install.sh) runs the gateway
# through it when $NOTIFY_SOCKET is set, i.e. under the unit's Type=notify.
#
# Why: Node.js cannot create unix datagram sockets, but it can write(2) to one it inherited, and
# a datagram carries the credentials of the process that writes it. So the gateway's own
# READY=1 / WATCHDOG=1 come from the unit's main PID — accepted with NotifyAccess=main, and free of
# the race that drops messages from short-lived helpers before systemd 254 (`systemd-notify
# --ready` run as a child exits before PID 1 has looked up its cgroup; Debian 12 / Raspberry Pi OS
# bookworm ship systemd 252). perl, because perl-base is Essential on Debian and Raspberry Pi OS
# (Socket and Fcntl are in it): nothing to install, and it is gone after the exec.
#
# If the socket cannot be set up, COMMAND still runs (serving matters more), without the
# descriptor; the gateway then logs that it cannot report readiness.
use strict;
use warnings;
use Socket qw(AF_UNIX SOCK_DGRAM pack_sockaddr_un);
use Fcntl qw(F_GETFL F_SETFL F_SETFD O_NONBLOCK);

die "usage: notify-exec.pl COMMAND [ARG...]\n" unless @ARGV;

sub connect_notify_socket {
  my ($address) = @_;
  # sd_notify(3): "@name" is in the abstract namespace (a leading NUL byte), else a path.
  if ($address =~ /^@/) {
    $address = "\0" . substr($address, 1);
  } elsif ($address !~ m{^/}) {
    return (undef, 'not an absolute path or @abstract name');
  }
  # sun_path holds 108 bytes (pack_sockaddr_un would only warn and cut the address).
  return (undef, 'address longer than 108 bytes') if length($address) > 108;
  my $sockaddr = pack_sockaddr_un($address);
  socket(my $socket, AF_UNIX, SOCK_DGRAM, 0) or return (undef, "socket: $!");
  connect($socket, $sockaddr) or return (undef, "connect: $!");
  # Non-blocking: when PID 1 is slow to read, a send fails with EAGAIN (counted by the gateway)
  # instead of stalling its event loop.
  my $flags = fcntl($socket, F_GETFL, 0) or return (undef, "fcntl: $!");
  fcntl($socket, F_SETFL, $flags | O_NONBLOCK) or return (undef, "fcntl: $!");
  # perl marks descriptors above 2 close-on-exec; this one must survive the exec.
  fcntl($socket, F_SETFD, 0) or return (undef, "fcntl: $!");
  return ($socket, undef);
}

my $address = $ENV{NOTIFY_SOCKET} // '';
delete $ENV{EDGEWAY_NOTIFY_FD};
# Kept in scope until the exec, so that the descriptor stays open.
my $socket;
if ($address ne '') {
  my $problem;
  ($socket, $problem) = connect_notify_socket($address);
  if (defined $socket) {
    $ENV{EDGEWAY_NOTIFY_FD} = fileno($socket);
  } else {
    print STDERR "notify-exec.pl: NOTIFY_SOCKET=$address: $problem; starting without readiness notification\n";
  }
}
{ no warnings 'exec'; exec { $ARGV[0] } @ARGV; }
print STDERR "notify-exec.pl: cannot run $ARGV[0]: $!\n";
exit 127;
