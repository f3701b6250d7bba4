/*
 * net.c - the plain-C half of the C-STORE listener: the listening socket the daemon hands to
 * dcm_listener_start() and the spool file name rule.
 *
 * Design. The socket is made here (non-blocking: the listener polls it, and a connection reset
 * between poll and accept must not block its accept thread), not by DCMTK: DCMTK 3.6.7 binds its
 * acceptor to INADDR_ANY (IPv4 only) and has no bind-address option, so the daemon binds to the
 * configured numeric address itself (and systemd socket activation can hand over the same kind of
 * socket). Spool names are "<SOP Instance UID>.<epoch-ms>-<counter>.dcm": the UID is checked to be
 * a DICOM UID ([0-9.], at most 64 characters, no empty component) before it becomes part of a path,
 * and the unique part keeps a second copy of the same UID from overwriting the first.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dicom.h"
#include "dicom_int.h"

#define DCM_LISTEN_BACKLOG 64

cxr_err dcm_listen_socket(const char *address, int port, int *ret_fd, char *errbuf, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    int fd, one = 1, e;

    if (!address || !ret_fd || port < 0 || port > 65535)
        return px_err(errbuf, errlen, CXR_EINVAL, "listen: invalid address or port");
    memset(&ss, 0, sizeof(ss));
    if (strchr(address, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        if (inet_pton(AF_INET6, address, &s6->sin6_addr) != 1)
            return px_err(errbuf, errlen, CXR_EINVAL, "listen: '%s' is not a numeric IPv6 address",
                          address);
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        sslen = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        if (inet_pton(AF_INET, address, &s4->sin_addr) != 1)
            return px_err(errbuf, errlen, CXR_EINVAL, "listen: '%s' is not a numeric IPv4 address",
                          address);
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        sslen = sizeof(*s4);
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return px_err(errbuf, errlen, CXR_ENET, "listen: socket: %s", strerror(errno));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0)
        goto out_close;
    if (ss.ss_family == AF_INET6 &&
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0)
        goto out_close;
    if (bind(fd, (struct sockaddr *)&ss, sslen) != 0)
        goto out_close;
    if (listen(fd, DCM_LISTEN_BACKLOG) != 0)
        goto out_close;
    *ret_fd = fd;
    return CXR_OK;

out_close:
    e = errno;
    (void)close(fd);
    return px_err(errbuf, errlen, CXR_ENET, "listen: %s port %d: %s", address, port, strerror(e));
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

bool dcm_uid_ok(const char *uid, size_t len)
{
    if (len == 0 || len > 64 || uid[0] == '.' || uid[len - 1] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        if (uid[i] == '.') {
            if (uid[i + 1] == '.')
                return false;
        } else if (!is_digit(uid[i])) {
            return false;
        }
    }
    return true;
}

bool dcm_spool_name_ok(const char *name)
{
    size_t n, i, dot;

    if (!name)
        return false;
    n = strlen(name);
    if (n < 4 || strcmp(name + n - 4, ".dcm") != 0)
        return false;
    n -= 4;
    /* the unique part: digits '-' digits, after the last '.' */
    for (dot = n; dot > 0 && name[dot - 1] != '.'; dot--)
        ;
    if (dot == 0)
        return false;
    i = dot;
    if (i >= n || !is_digit(name[i]))
        return false;
    while (i < n && is_digit(name[i]))
        i++;
    if (i >= n || name[i] != '-')
        return false;
    i++;
    if (i >= n)
        return false;
    while (i < n && is_digit(name[i]))
        i++;
    if (i != n)
        return false;
    return dcm_uid_ok(name, dot - 1);
}
