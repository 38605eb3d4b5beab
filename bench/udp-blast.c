// udp-blast: the packet sender of bench/netfilter.ts. Sends small UDP
// datagrams to <ipv4> <port> for <ms> milliseconds, 64 per sendmmsg(2) call
// on an unconnected socket (a connected one would fail sends with the ICMP
// port-unreachable errors the receiver answers with), and prints
// "<sent> <seconds> <failed calls> <CPU seconds (user + system)>". Sends the filter refuses (EPERM from
// netfilter, ENOBUFS from a TC drop) are counted as failed calls, not errors.
// Compiled at bench time with the host's clang; no other dependency.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 64

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: udp-blast <ipv4> <port> <ms> <payload bytes>\n");
    return 2;
  }
  struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
  if (inet_pton(AF_INET, argv[1], &to.sin_addr) != 1) {
    fprintf(stderr, "udp-blast: %s is not an IPv4 address\n", argv[1]);
    return 2;
  }
  static char payload[1472];
  size_t length = (size_t)atoi(argv[4]);
  if (length > sizeof payload) return 2;
  memset(payload, 0xae, sizeof payload);
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) {
    perror("udp-blast: socket");
    return 1;
  }
  struct iovec iov = {.iov_base = payload, .iov_len = length};
  static struct mmsghdr messages[BATCH];
  for (int i = 0; i < BATCH; i++) {
    messages[i].msg_hdr.msg_name = &to;
    messages[i].msg_hdr.msg_namelen = sizeof to;
    messages[i].msg_hdr.msg_iov = &iov;
    messages[i].msg_hdr.msg_iovlen = 1;
  }
  double start = now(), end = start + atof(argv[3]) / 1000, t;
  unsigned long long sent = 0, failed = 0;
  while ((t = now()) < end) {
    int n = sendmmsg(fd, messages, BATCH, 0);
    if (n > 0) {
      sent += (unsigned long long)n;
    } else if (errno == EPERM || errno == ENOBUFS || errno == EAGAIN) {
      failed++;
    } else {
      perror("udp-blast: sendmmsg");
      return 1;
    }
  }
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  double cpu = (double)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + (double)(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  printf("%llu %.6f %llu %.6f\n", sent, t - start, failed, cpu);
  return 0;
}
