/*
 * p2pgraph.h - a portable, single-threaded, host-driven implementation of the
 * Windows Peer Graphing API (p2p.h / P2PGraph.dll), speaking [MS-PPGRH] 1.0.
 *
 * Names, parameter orders, structures, event types and HRESULT values follow
 * Microsoft's p2p.h so that code written against it ports by recompiling.
 * Where Windows uses threads or Win32 event handles, this library is polled:
 * the host asks which sockets to watch and until when (PeerGraphGetPollFds),
 * waits however it likes, then hands readiness and the current time back
 * (PeerGraphService).  No thread is ever created.  Events are pulled with
 * PeerGraphGetEventData; the only application code that runs inside the
 * library is the optional poll callback and, for secured graphs, the
 * security callbacks of PEER_SECURITY_INTERFACE (synchronous, as on Windows;
 * PeerGraph* calls made from them return E_ACCESSDENIED).
 *
 * Do not include Microsoft's p2p.h in the same translation unit: this header
 * declares the same names.
 *
 * Strings are wchar_t (PCWSTR).  On Windows that is UTF-16; elsewhere it is
 * UTF-32.  The wire uses UTF-8 (handshake) and UTF-16 (records); conversion is
 * done inside.
 *
 * Every function documents each return code and what the caller should do
 * next.  Codes common to almost every call are not repeated:
 *   PEER_E_NOT_INITIALIZED  PeerGraphStartup has not been called (or every
 *                           Startup has been matched by a Shutdown): call it.
 *   PEER_E_INVALID_GRAPH    the HGRAPH is not an open graph (never valid, or
 *                           closed): stop using it.
 *   E_INVALIDARG            a NULL pointer, a bad dwSize, or a value out of
 *                           range: fix the call; nothing was changed.
 *   E_OUTOFMEMORY           an allocation failed; nothing was changed: retry
 *                           later or give up.
 */
#ifndef P2PGRAPH_H
#define P2PGRAPH_H

#ifdef _WIN32
#  ifndef WIN32_LEAN_AND_MEAN
#    define WIN32_LEAN_AND_MEAN
#  endif
#  include <winsock2.h>
#  include <ws2tcpip.h>
#  include <windows.h>
#else
#  include <netinet/in.h>
#endif
#include <stdint.h>
#include <stddef.h>
#include <wchar.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------- */
/* Win32 base types on other platforms                                        */
/* ------------------------------------------------------------------------- */
#ifndef _WIN32
typedef uint8_t  BYTE, *PBYTE;
typedef uint16_t WORD;
typedef uint32_t DWORD;
typedef uint32_t ULONG;
typedef int32_t  LONG;
typedef uint64_t ULONGLONG;
typedef int32_t  HRESULT;
typedef int      BOOL;
typedef void    *PVOID;
typedef void    *HANDLE;
typedef wchar_t  WCHAR;
typedef wchar_t *PWSTR;
typedef const wchar_t *PCWSTR;
typedef struct _GUID {
    uint32_t Data1;
    uint16_t Data2;
    uint16_t Data3;
    uint8_t  Data4[8];
} GUID;
typedef struct _FILETIME {
    DWORD dwLowDateTime;
    DWORD dwHighDateTime;
} FILETIME;
typedef struct sockaddr_in6 SOCKADDR_IN6;
#  ifndef TRUE
#    define TRUE 1
#    define FALSE 0
#  endif
#  define MAKEWORD(a, b) ((WORD)(((BYTE)(a)) | ((WORD)((BYTE)(b))) << 8))
#  define SUCCEEDED(hr) (((HRESULT)(hr)) >= 0)
#  define FAILED(hr) (((HRESULT)(hr)) < 0)
#  define S_OK ((HRESULT)0)
#  define S_FALSE ((HRESULT)1)
#  define E_FAIL ((HRESULT)0x80004005L)
#  define E_ABORT ((HRESULT)0x80004004L)
#  define E_ACCESSDENIED ((HRESULT)0x80070005L)
#  define E_OUTOFMEMORY ((HRESULT)0x8007000EL)
#  define E_INVALIDARG ((HRESULT)0x80070057L)
#endif
#ifndef E_NOT_SUFFICIENT_BUFFER
#  define E_NOT_SUFFICIENT_BUFFER ((HRESULT)0x8007007AL) /* HRESULT_FROM_WIN32(ERROR_INSUFFICIENT_BUFFER) */
#endif

typedef void *HGRAPH, **PHGRAPH;
typedef void *HPEEREVENT, **PHPEEREVENT;
typedef void *HPEERENUM, **PHPEERENUM;

#define PEER_GRAPH_VERSION MAKEWORD(1, 0)

/* ------------------------------------------------------------------------- */
/* HRESULT codes (values from winerror.h / p2p.h)                             */
/* ------------------------------------------------------------------------- */
#define P2PG_HR(x) ((HRESULT)(x##L))
#ifndef PEER_E_IPV6_NOT_INSTALLED
#define PEER_E_IPV6_NOT_INSTALLED          P2PG_HR(0x80630001)
#define PEER_E_NOT_INITIALIZED             P2PG_HR(0x80630002)
#define PEER_E_CANNOT_START_SERVICE        P2PG_HR(0x80630003)
#define PEER_E_NOT_LICENSED                P2PG_HR(0x80630004)
#define PEER_E_INVALID_GRAPH               P2PG_HR(0x80630010)
#define PEER_E_DBNAME_CHANGED              P2PG_HR(0x80630011)
#define PEER_E_DUPLICATE_GRAPH             P2PG_HR(0x80630012)
#define PEER_E_GRAPH_NOT_READY             P2PG_HR(0x80630013)
#define PEER_E_GRAPH_SHUTTING_DOWN         P2PG_HR(0x80630014)
#define PEER_E_GRAPH_IN_USE                P2PG_HR(0x80630015)
#define PEER_E_INVALID_DATABASE            P2PG_HR(0x80630016)
#define PEER_E_TOO_MANY_ATTRIBUTES         P2PG_HR(0x80630017)
#define PEER_E_CONNECTION_NOT_FOUND        P2PG_HR(0x80630103)
#define PEER_E_CONNECT_SELF                P2PG_HR(0x80630106)
#define PEER_E_ALREADY_LISTENING           P2PG_HR(0x80630107)
#define PEER_E_NODE_NOT_FOUND              P2PG_HR(0x80630108)
#define PEER_E_CONNECTION_FAILED           P2PG_HR(0x80630109)
#define PEER_E_CONNECTION_NOT_AUTHENTICATED P2PG_HR(0x8063010A)
#define PEER_E_CONNECTION_REFUSED          P2PG_HR(0x8063010B)
#define PEER_E_RECORD_NOT_FOUND            P2PG_HR(0x80630301)
#define PEER_E_DATABASE_ACCESSDENIED       P2PG_HR(0x80630302)
#define PEER_E_DBINITIALIZATION_FAILED     P2PG_HR(0x80630303)
#define PEER_E_MAX_RECORD_SIZE_EXCEEDED    P2PG_HR(0x80630304)
#define PEER_E_DATABASE_ALREADY_PRESENT    P2PG_HR(0x80630305)
#define PEER_E_DATABASE_NOT_PRESENT        P2PG_HR(0x80630306)
#define PEER_E_EVENT_HANDLE_NOT_FOUND      P2PG_HR(0x80630501)
#define PEER_E_INVALID_SEARCH              P2PG_HR(0x80630601)
#define PEER_E_INVALID_ATTRIBUTES          P2PG_HR(0x80630602)
#define PEER_E_INVALID_RECORD              P2PG_HR(0x80632010)
#define PEER_E_NOT_AUTHORIZED              P2PG_HR(0x80632020)
#define PEER_E_DEFERRED_VALIDATION         P2PG_HR(0x80632030)
#define PEER_E_INVALID_RECORD_EXPIRATION   P2PG_HR(0x80632080)
#define PEER_E_INVALID_RECORD_SIZE         P2PG_HR(0x80632083)
#define PEER_E_UNSUPPORTED_VERSION         P2PG_HR(0x80632090)
#define PEER_E_TIMEOUT                     P2PG_HR(0x80637005)
#define PEER_E_INVALID_ADDRESS             P2PG_HR(0x80637007)
#define PEER_S_GRAPH_DATA_CREATED          P2PG_HR(0x00630001)
#define PEER_S_NO_EVENT_DATA               P2PG_HR(0x00630002)
#define PEER_S_ALREADY_CONNECTED           P2PG_HR(0x00632000)
#endif
#ifndef PEER_E_ALREADY_EXISTS
#define PEER_E_ALREADY_EXISTS              P2PG_HR(0x800700B7) /* HRESULT_FROM_WIN32(ERROR_ALREADY_EXISTS) */
#define PEER_E_NOT_FOUND                   P2PG_HR(0x80070490)
#define PEER_E_DISK_FULL                   P2PG_HR(0x80070070) /* HRESULT_FROM_WIN32(ERROR_DISK_FULL) */
/* p2pgraph extension: PeerGraphSendData found the connection's queue full
 * (HRESULT_FROM_WIN32(WSAEWOULDBLOCK)); wait for PEER_GRAPH_EVENT_SEND_READY. */
#define PEER_E_SEND_QUEUE_FULL             P2PG_HR(0x80072733)
#endif

/*
 * p2pgraph extensions: connection failure reasons that Windows folds into
 * PEER_E_CONNECTION_FAILED.  They appear only in
 * PEER_EVENT_CONNECTION_CHANGE_DATA.hrConnectionFailedReason.
 *   PEER_E_TCP_CONNECTION_REFUSED  nothing listens at the address (TCP RST);
 *                                  HRESULT_FROM_WIN32(WSAECONNREFUSED).
 *   PEER_E_GRAPH_ID_MISMATCH       a node listens there, but not for this graph.
 *   PEER_E_PEER_ID_MISMATCH        a node of this graph listens there, but not
 *                                  the peer ID asked for.
 *   PEER_E_PROTOCOL_ERROR          the remote sent a malformed, oversized,
 *                                  out-of-order or unknown message.
 * PEER_E_TIMEOUT (connect or authentication timer) and PEER_E_CONNECT_SELF
 * (the address is this node) are Microsoft codes reused for the same purpose.
 */
#define PEER_E_TCP_CONNECTION_REFUSED      P2PG_HR(0x8007274D)
#define PEER_E_GRAPH_ID_MISMATCH           P2PG_HR(0x80630180)
#define PEER_E_PEER_ID_MISMATCH            P2PG_HR(0x80630181)
#define PEER_E_PROTOCOL_ERROR              P2PG_HR(0x80630182)

/*
 * Link security failure reasons (hrConnectionFailedReason of an outbound
 * connection that a graph security provider rejected; see "Security" below).
 * The first three are p2p.h codes of the Peer Grouping and Identity APIs,
 * reused for the same meaning; the fourth is a p2pgraph code.
 *   PEER_E_INVALID_CREDENTIAL      the two nodes do not hold the same graph
 *                                  secret (p2pgraph-tls-psk).
 *   PEER_E_CERTIFICATE_NOT_TRUSTED a certificate is not signed by the graph
 *                                  CA (p2pgraph-tls-cert), on either side.
 *   PEER_E_INVALID_TIME_PERIOD     a certificate has expired or is not valid
 *                                  yet (the machine's wall clock decides).
 *   PEER_E_INVALID_PEER_NAME       a certificate does not name the peer ID the
 *                                  node uses in the graph (subject CN).
 *   PEER_E_CONNECTION_NOT_AUTHENTICATED  any other failure before the link
 *                                  was authenticated: the two graphs are
 *                                  secured differently (or one not at all),
 *                                  no common TLS suite, the remote closed.
 * PEER_E_INVALID_CREDENTIAL_INFO is returned by PeerGraphCreate/Open when
 * pbSecurityInfo cannot be used (a PEM that does not parse, a key that does
 * not match its certificate, a certificate for another peer ID).
 */
#define PEER_E_INVALID_CREDENTIAL_INFO     P2PG_HR(0x80632081)
#define PEER_E_INVALID_CREDENTIAL          P2PG_HR(0x80632082)
#define PEER_E_INVALID_PEER_NAME           P2PG_HR(0x80632050)
#define PEER_E_CERTIFICATE_NOT_TRUSTED     P2PG_HR(0x80630702)
#define PEER_E_INVALID_TIME_PERIOD         P2PG_HR(0x80630705)

/* ------------------------------------------------------------------------- */
/* Enumerations (values as in p2p.h)                                          */
/* ------------------------------------------------------------------------- */
typedef enum peer_graph_event_type_tag {
    PEER_GRAPH_EVENT_STATUS_CHANGED = 1,
    PEER_GRAPH_EVENT_PROPERTY_CHANGED = 2,
    PEER_GRAPH_EVENT_RECORD_CHANGED = 3,
    PEER_GRAPH_EVENT_DIRECT_CONNECTION = 4,
    PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION = 5,
    PEER_GRAPH_EVENT_INCOMING_DATA = 6,
    PEER_GRAPH_EVENT_CONNECTION_REQUIRED = 7,
    PEER_GRAPH_EVENT_NODE_CHANGED = 8,
    PEER_GRAPH_EVENT_SYNCHRONIZED = 9,
    /* p2pgraph extension: a connection whose PeerGraphSendData returned
     * PEER_E_SEND_QUEUE_FULL has drained to half its queue limit or less;
     * data is sendReadyData. */
    PEER_GRAPH_EVENT_SEND_READY = 0x100
} PEER_GRAPH_EVENT_TYPE;

typedef enum peer_graph_status_flags_tag {
    PEER_GRAPH_STATUS_LISTENING = 0x0001,
    PEER_GRAPH_STATUS_HAS_CONNECTIONS = 0x0002, /* at least one CONNECTED neighbor (direct links do not count) */
    PEER_GRAPH_STATUS_SYNCHRONIZED = 0x0004
} PEER_GRAPH_STATUS_FLAGS;

typedef enum peer_graph_property_flags_tag {
    PEER_GRAPH_PROPERTY_HEARTBEATS = 0x0001,
    PEER_GRAPH_PROPERTY_DEFER_EXPIRATION = 0x0002
} PEER_GRAPH_PROPERTY_FLAGS;

/* p2pgraph extension: how fast the graph maintains itself (see
 * PeerGraphSetMaintenanceProfile). */
typedef enum peer_maintenance_profile_tag {
    PEER_MAINTENANCE_COMPAT = 0, /* MS-PPGRH timers (the default) */
    PEER_MAINTENANCE_FAST = 1    /* seconds, not minutes (PROTOCOL.md section 4, bit 0x20) */
} PEER_MAINTENANCE_PROFILE;

/* p2pgraph extension: the graph maintenance timers, in milliseconds
 * (PeerGraphGetTimers / PeerGraphSetTimers; a profile sets them all). */
typedef struct peer_graph_timers_tag {
    DWORD dwSize;              /* sizeof(PEER_GRAPH_TIMERS) */
    ULONG ulMaintenanceMs;     /* Graph Maintenance timer with neighbors (compat 300000, fast 2000) */
    ULONG ulMaintenanceIdleMs; /* ... without neighbors (compat 30000, fast 1000) */
    ULONG ulRetryMs;           /* below the minimum, the next candidate after a failed attempt (compat 1000, fast 100) */
    ULONG ulKeepaliveMs;       /* fast profile: keepalive frame, Ping or held ACKs on a link idle this long (1000) */
    ULONG ulDeadMs;            /* fast profile: a fast neighbor silent this long is dead (2500) */
    ULONG ulContactMinMs;      /* Contact timer, uniform in [min, max] (compat 10000..180000, fast 500..3000) */
    ULONG ulContactMaxMs;
    ULONG ulPartitionMinMs;    /* Partition Detection timer (compat 5000..30000, fast 200..1000) */
    ULONG ulPartitionMaxMs;
    ULONG ulSignatureStaleMs;  /* 0 (compat): the Signature record lives until it expires (300 s).  Else
                                * (fast 6000): its owner renews it every third of this (by a beat
                                * between fast nodes, PROTOCOL.md P17), and one not
                                * renewed for this long counts as gone, so a split-off part elects its
                                * own signature within seconds and partition repair can start */
} PEER_GRAPH_TIMERS;

typedef enum peer_graph_scope_tag {
    PEER_GRAPH_SCOPE_ANY = 0,
    PEER_GRAPH_SCOPE_GLOBAL = 1,
    PEER_GRAPH_SCOPE_SITELOCAL = 2,
    PEER_GRAPH_SCOPE_LINKLOCAL = 3,
    PEER_GRAPH_SCOPE_LOOPBACK = 4
} PEER_GRAPH_SCOPE;

typedef enum peer_node_change_type_tag {
    PEER_NODE_CHANGE_CONNECTED = 1,
    PEER_NODE_CHANGE_DISCONNECTED = 2,
    PEER_NODE_CHANGE_UPDATED = 3
} PEER_NODE_CHANGE_TYPE;

typedef enum peer_record_change_type_tag {
    PEER_RECORD_ADDED = 1,
    PEER_RECORD_UPDATED = 2,
    PEER_RECORD_DELETED = 3,
    PEER_RECORD_EXPIRED = 4
} PEER_RECORD_CHANGE_TYPE;

typedef enum peer_connection_status_tag {
    PEER_CONNECTED = 1,
    PEER_DISCONNECTED = 2,
    PEER_CONNECTION_FAILED = 3
} PEER_CONNECTION_STATUS;

typedef enum peer_connection_flags_tag {
    PEER_CONNECTION_NEIGHBOR = 0x0001,
    PEER_CONNECTION_DIRECT = 0x0002
} PEER_CONNECTION_FLAGS;

/* ------------------------------------------------------------------------- */
/* Structures (field order as in p2p.h)                                       */
/* ------------------------------------------------------------------------- */
typedef struct peer_version_data_tag {
    WORD wVersion;
    WORD wHighestVersion;
} PEER_VERSION_DATA, *PPEER_VERSION_DATA;

typedef struct peer_data_tag {
    ULONG cbData;
    PBYTE pbData;
} PEER_DATA, *PPEER_DATA;

typedef enum peer_record_flags_tag {
    PEER_RECORD_FLAG_AUTOREFRESH = 0x0001,
    PEER_RECORD_FLAG_DELETED = 0x0002
} PEER_RECORD_FLAGS;

typedef struct peer_record_tag {
    DWORD dwSize;
    GUID type;
    GUID id;
    DWORD dwVersion;
    DWORD dwFlags;
    PWSTR pwzCreatorId;
    PWSTR pwzModifiedById;
    PWSTR pwzAttributes;
    FILETIME ftCreation;
    FILETIME ftExpiration;
    FILETIME ftLastModified;
    PEER_DATA securityData;
    PEER_DATA data;
} PEER_RECORD, *PPEER_RECORD;

typedef struct peer_address_tag {
    DWORD dwSize;
    SOCKADDR_IN6 sin6;
} PEER_ADDRESS, *PPEER_ADDRESS;

typedef struct peer_connection_info_tag {
    DWORD dwSize;
    DWORD dwFlags;
    ULONGLONG ullConnectionId;
    ULONGLONG ullNodeId;
    PWSTR pwzPeerId;
    PEER_ADDRESS address;
} PEER_CONNECTION_INFO;

typedef struct peer_graph_properties_tag {
    DWORD dwSize;
    DWORD dwFlags;
    DWORD dwScope;
    DWORD dwMaxRecordSize;
    PWSTR pwzGraphId;
    PWSTR pwzCreatorId;
    PWSTR pwzFriendlyName;
    PWSTR pwzComment;
    ULONG ulPresenceLifetime;
    ULONG cPresenceMax;
} PEER_GRAPH_PROPERTIES, *PPEER_GRAPH_PROPERTIES;

typedef struct peer_node_info_tag {
    DWORD dwSize;
    ULONGLONG ullNodeId;
    PWSTR pwzPeerId;
    ULONG cAddresses;
    PPEER_ADDRESS pAddresses;
    PWSTR pwzAttributes;
} PEER_NODE_INFO, *PPEER_NODE_INFO;

typedef struct peer_graph_event_registration_tag {
    PEER_GRAPH_EVENT_TYPE eventType;
    GUID *pType;
} PEER_GRAPH_EVENT_REGISTRATION, *PPEER_GRAPH_EVENT_REGISTRATION;

typedef struct peer_event_incoming_data_tag {
    DWORD dwSize;
    ULONGLONG ullConnectionId;
    GUID type;
    PEER_DATA data;
} PEER_EVENT_INCOMING_DATA, *PPEER_EVENT_INCOMING_DATA;

typedef struct peer_event_record_change_data_tag {
    DWORD dwSize;
    PEER_RECORD_CHANGE_TYPE changeType;
    GUID recordId;
    GUID recordType;
} PEER_EVENT_RECORD_CHANGE_DATA, *PPEER_EVENT_RECORD_CHANGE_DATA;

typedef struct peer_event_connection_change_data_tag {
    DWORD dwSize;
    PEER_CONNECTION_STATUS status;
    ULONGLONG ullConnectionId;
    ULONGLONG ullNodeId;
    ULONGLONG ullNextConnectionId;
    HRESULT hrConnectionFailedReason;
} PEER_EVENT_CONNECTION_CHANGE_DATA, *PPEER_EVENT_CONNECTION_CHANGE_DATA;

typedef struct peer_event_synchronized_data_tag {
    DWORD dwSize;
    GUID recordType;
} PEER_EVENT_SYNCHRONIZED_DATA, *PPEER_EVENT_SYNCHRONIZED_DATA;

/* p2pgraph extension (PEER_GRAPH_EVENT_SEND_READY). */
typedef struct peer_event_send_ready_data_tag {
    DWORD dwSize;
    ULONGLONG ullConnectionId;
    ULONG cbQueued;         /* application bytes still queued on it */
    ULONG cbLimit;          /* its queue limit */
} PEER_EVENT_SEND_READY_DATA, *PPEER_EVENT_SEND_READY_DATA;

typedef struct peer_event_node_change_data_tag {
    DWORD dwSize;
    PEER_NODE_CHANGE_TYPE changeType;
    ULONGLONG ullNodeId;
    PWSTR pwzPeerId;
} PEER_EVENT_NODE_CHANGE_DATA, *PPEER_EVENT_NODE_CHANGE_DATA;

/* The union is anonymous, as in p2p.h (a C11 feature every C99 compiler we
 * target accepts unless -pedantic is given).  Define NONAMELESSUNION to name
 * it `u`, as Windows does. */
#ifdef NONAMELESSUNION
#define P2PG_UNION_NAME u
#else
#define P2PG_UNION_NAME
#endif
typedef struct peer_graph_event_data_tag {
    PEER_GRAPH_EVENT_TYPE eventType;
    union {
        PEER_GRAPH_STATUS_FLAGS dwStatus;
        PEER_EVENT_INCOMING_DATA incomingData;
        PEER_EVENT_RECORD_CHANGE_DATA recordChangeData;
        PEER_EVENT_CONNECTION_CHANGE_DATA connectionChangeData;
        PEER_EVENT_NODE_CHANGE_DATA nodeChangeData;
        PEER_EVENT_SYNCHRONIZED_DATA synchronizedData;
        PEER_EVENT_SEND_READY_DATA sendReadyData; /* p2pgraph extension */
    } P2PG_UNION_NAME;
} PEER_GRAPH_EVENT_DATA, *PPEER_GRAPH_EVENT_DATA;

/* ------------------------------------------------------------------------- */
/* Security: the graph security interface (p2p.h) and our two providers       */
/* ------------------------------------------------------------------------- */
#ifndef CALLBACK
#define CALLBACK
#endif
#ifndef _WIN32
typedef const char *PCSTR;
#endif

/*
 * The record callbacks run synchronously inside the call that meets the
 * record (PeerGraphAddRecord/UpdateRecord/DeleteRecord, PeerGraphService,
 * PeerGraphOpen, PeerGraphImportDatabase, PeerGraphValidateDeferredRecords),
 * as on Windows.  They must return quickly and must not call any PeerGraph*
 * function: such a call returns E_ACCESSDENIED (an extension: Windows would
 * deadlock).  pRecord and its strings are valid during the call only.
 *
 * pfnValidateRecord is called for every record received from a neighbor
 * (FLOOD, synchronization) and every record loaded from the database or an
 * import, after the structural checks of [MS-PPGRH] 3.1.7.27, internal
 * records (Graph Info, Signature, Contact, Presence) included.  changeType:
 * PEER_RECORD_ADDED (no live version held here), PEER_RECORD_UPDATED or
 * PEER_RECORD_DELETED (a deletion mark).  Return S_OK to accept;
 * PEER_E_INVALID_RECORD to drop it (it is not stored or passed on);
 * PEER_E_DEFERRED_VALIDATION to park it on the graph's deferred list until
 * PeerGraphValidateDeferredRecords; any other value drops it as well.
 *
 * pfnSecureRecord is called for every version this node publishes (the
 * application's adds, updates and deletions, and the library's own records:
 * presence, Graph Info, Signature, Contact, refreshes).  pRecord is complete
 * (ID, version, times, creator, modifier) except securityData, which the
 * callback returns in *ppSecurityData (NULL or cbData 0: none).  The bytes
 * are copied into the record; then pfnFreeSecurityData (if set) is called
 * with *ppSecurityData.  A failure HRESULT (PEER_E_NOT_AUTHORIZED, say)
 * aborts that change: the API call returns it.
 *
 * pfnAuthFailed (Vista's PFNPEER_ON_PASSWORD_AUTH_FAILED) is called when a
 * connection of this graph, in either direction, fails link authentication
 * (wrong secret, untrusted, expired or misnamed certificate).
 */
typedef HRESULT (CALLBACK *PFNPEER_VALIDATE_RECORD)(HGRAPH hGraph, PVOID pvContext, PPEER_RECORD pRecord,
                                                    PEER_RECORD_CHANGE_TYPE changeType);
typedef HRESULT (CALLBACK *PFNPEER_SECURE_RECORD)(HGRAPH hGraph, PVOID pvContext, PPEER_RECORD pRecord,
                                                  PEER_RECORD_CHANGE_TYPE changeType, PPEER_DATA *ppSecurityData);
typedef HRESULT (CALLBACK *PFNPEER_FREE_SECURITY_DATA)(HGRAPH hGraph, PVOID pvContext, PPEER_DATA pSecurityData);
typedef HRESULT (CALLBACK *PFNPEER_ON_PASSWORD_AUTH_FAILED)(HGRAPH hGraph, PVOID pvContext);

/*
 * PEER_SECURITY_INTERFACE, as in p2p.h.  dwSize = sizeof.  pwzSspFilename
 * must be NULL (nothing is loaded from a file).  pwzPackageName selects the
 * link security provider:
 *   NULL                        no link security (plain MS-PPGRH links); the
 *                               record callbacks may still be used.
 *                               cbSecurityInfo 0, pbSecurityInfo NULL.
 *   PEER_SECURITY_PACKAGE_PSK   TLS 1.2, ECDHE-PSK with ChaCha20-Poly1305:
 *                               only holders of the graph secret can join.
 *                               pbSecurityInfo = the secret, any bytes
 *                               (cbSecurityInfo 1..PEER_MAX_SECRET_SIZE).
 *                               The TLS key is HMAC-SHA256(secret, the graph
 *                               ID), so one secret gives each graph its own.
 *   PEER_SECURITY_PACKAGE_CERT  TLS 1.2, ECDHE-ECDSA with ChaCha20-Poly1305 or
 *                               AES-GCM, both sides authenticated by
 *                               certificates signed by the graph CA; a node's
 *                               certificate must have its peer ID as subject
 *                               CN.  pbSecurityInfo = a PEER_TLS_CERT_INFO,
 *                               cbSecurityInfo = its size.
 * pbSecurityInfo (and what it points to) is read during Create/Open only.
 * pfnValidateRecord and pfnSecureRecord: both NULL or both set.
 * pvContext is passed to every callback.  Every node of a graph must use the
 * same package and the same secret or CA; a node secured differently fails
 * with PEER_E_CONNECTION_NOT_AUTHENTICATED (PROTOCOL.md section 6).
 */
typedef struct peer_security_interface_tag {
    DWORD dwSize;
    PWSTR pwzSspFilename;
    PWSTR pwzPackageName;
    ULONG cbSecurityInfo;
    PBYTE pbSecurityInfo;
    PVOID pvContext;
    PFNPEER_VALIDATE_RECORD pfnValidateRecord;
    PFNPEER_SECURE_RECORD pfnSecureRecord;
    PFNPEER_FREE_SECURITY_DATA pfnFreeSecurityData;
    PFNPEER_ON_PASSWORD_AUTH_FAILED pfnAuthFailed;
} PEER_SECURITY_INTERFACE, *PPEER_SECURITY_INTERFACE;

#define PEER_SECURITY_PACKAGE_PSK  L"p2pgraph-tls-psk"
#define PEER_SECURITY_PACKAGE_CERT L"p2pgraph-tls-cert"
#define PEER_MAX_SECRET_SIZE       4096

/* pbSecurityInfo of PEER_SECURITY_PACKAGE_CERT.  Each string is PEM text,
 * NUL-terminated.  pszCertPem: this node's certificate first, then any
 * intermediate CA certificates; its subject CN is the node's peer ID in
 * UTF-8.  pszKeyPem: its private key (EC keys; P-256 recommended), encrypted
 * with pszKeyPassword when that is not NULL.  pszCaPem: the graph CA
 * certificate(s) that every member's certificate must chain to. */
typedef struct peer_tls_cert_info_tag {
    DWORD dwSize;
    PCSTR pszCaPem;
    PCSTR pszCertPem;
    PCSTR pszKeyPem;
    PCSTR pszKeyPassword;
} PEER_TLS_CERT_INFO, *PPEER_TLS_CERT_INFO;

/* ------------------------------------------------------------------------- */
/* Limits (explicit; every one is enforced and tested)                        */
/* ------------------------------------------------------------------------- */
#define PEER_MAX_ID_CHARS            256    /* graph ID / peer ID, UTF-16 units incl. NUL */
#define PEER_MAX_FRIENDLY_NAME_CHARS 256
#define PEER_MAX_COMMENT_CHARS       512
#define PEER_MAX_NODE_ATTRIBUTES_CHARS 4096 /* PeerGraphSetNodeAttributes, UTF-16 units incl. NUL */
#define PEER_MAX_DATABASE_NAME_CHARS 200
#define PEER_FRAME_SEND_SIZE         16379  /* payload bytes per frame we send */
#define PEER_FRAME_MAX_SIZE          32768  /* largest frame payload accepted */
#define PEER_MAX_HANDSHAKE_MESSAGE   16384  /* any message before the link is CONNECTED */
#define PEER_DEFAULT_MAX_RECORD_SIZE (60u * 1024u * 1024u)
#define PEER_MIN_RECORD_SIZE         1024u
#define PEER_MAX_SECURITY_DATA       32768u /* PEER_RECORD.securityData bytes this node publishes */
#define PEER_MAX_RECORD_CHUNKS      (1u << 18) /* record slab chunks in the process (up to 64 KB each, or one record over
                                                  2 KB each); beyond, a record is not stored: E_OUTOFMEMORY */
#define PEER_MAX_DEFERRED_RECORDS    4096u  /* records a graph holds for PeerGraphValidateDeferredRecords ... */
#define PEER_MAX_DEFERRED_BYTES      (16u * 1024u * 1024u) /* ... and their bytes; beyond, dropped as rejected */
#define PEER_MESSAGE_OVERHEAD        65536u /* allowance above dwMaxRecordSize for a message */
#define PEER_MAX_SYNC_MESSAGE        (64u * 1024u * 1024u) /* a hash-sync list may reach this (20 B per record) */
#define PEER_MAX_SEND_QUEUE          (1024u * 1024u) /* graph messages (records, sync, ACKs) queued per connection */
#define PEER_MAX_DATA_SIZE           (16u * 1024u * 1024u) /* PeerGraphSendData cbData */
#define PEER_DEFAULT_DATA_QUEUE      (1024u * 1024u) /* application bytes queued per connection (settable) */
#define PEER_MIN_DATA_QUEUE          4096u
#define PEER_MAX_DATA_QUEUE          (256u * 1024u * 1024u)
#define PEER_DATA_MSG_OVERHEAD       32u    /* queue bytes counted per SendData message beyond cbData */
#define PEER_MAX_INCOMING_DATA       (4u * 1024u * 1024u) /* undelivered INCOMING_DATA bytes per registration before reading pauses */
#define PEER_MAX_CONNECTIONS_PER_GRAPH 1024 /* neighbor + direct + in progress */
#define PEER_MAX_PENDING_ACCEPTS     256    /* unauthenticated inbound per listener; when full, the
                                               * oldest is closed to make room for a new one */
#define PEER_DEFAULT_MAX_RECORDS     1000000u /* records per graph (PeerGraphSetRecordLimits) */
#define PEER_DEFAULT_MAX_RECORD_BYTES (1024ull * 1024u * 1024u) /* bytes of records per graph */
#define PEER_MAX_EVENTS_QUEUED       65536  /* per registration; further events are dropped and counted */
#define PEER_MAX_REFERRALS           100
#define PEER_REFERRALS_SENT          10
#define PEER_MIN_NEIGHBORS           2
#define PEER_IDEAL_NEIGHBORS         3
#define PEER_MAX_NEIGHBORS           7
#define PEER_CONNECT_TIMER_MS        60000u /* CONNECT sent, no WELCOME/REFUSE */
#define PEER_LINGER_MS               2000u  /* a closing connection flushes DISCONNECT for at most this */
#define PEER_SYNC_WATERMARK          (256u * 1024u) /* a sync answer queues FLOODs up to this many bytes */
#define PEER_DB_SYNC_MS              100u   /* a database change is fsynced within this (see PeerGraphService) */
#define PEER_MAINT_CONNECTED_MS      300000u /* Graph Maintenance timer with neighbors ([MS-PPGRH] 3.1.2) */
#define PEER_MAINT_IDLE_MS           30000u  /* ... and without */
#define PEER_MAINT_RETRY_MS          1000u   /* below the minimum, a failed attempt is followed by another after this */
#define PEER_FAST_MAINT_MS           2000u   /* fast profile: Graph Maintenance timer with neighbors */
#define PEER_FAST_MAINT_IDLE_MS      1000u   /* ... and without */
#define PEER_FAST_KEEPALIVE_MS       1000u   /* ... a keepalive on a neighbor link idle this long */
#define PEER_FAST_DEAD_MS            2500u   /* ... a link to a fast node silent this long is dead */
#define PEER_FAST_RETRY_MS           100u    /* ... the next candidate after a failed attempt */
#define PEER_CONTACT_MIN_MS          10000u  /* Contact timer range ([MS-PPGRH] 3.1.2) */
#define PEER_CONTACT_MAX_MS          180000u
#define PEER_PARTITION_MIN_MS        5000u   /* Partition Detection timer range ([MS-PPGRH] 3.1.2) */
#define PEER_PARTITION_MAX_MS        30000u
#define PEER_FAST_CONTACT_MIN_MS     500u    /* fast profile: Contact timer range */
#define PEER_FAST_CONTACT_MAX_MS     3000u
#define PEER_FAST_PARTITION_MIN_MS   200u    /* fast profile: Partition Detection timer range */
#define PEER_FAST_PARTITION_MAX_MS   1000u
#define PEER_FAST_SIGNATURE_STALE_MS 6000u   /* fast profile: a Signature record not renewed this long is gone */

/* ------------------------------------------------------------------------- */
/* Host-driven I/O                                                            */
/* ------------------------------------------------------------------------- */
#ifdef _WIN32
typedef SOCKET PEER_SOCKET;
#  define PEER_INVALID_SOCKET INVALID_SOCKET
#else
typedef int PEER_SOCKET;
#  define PEER_INVALID_SOCKET (-1)
#endif

#define PEER_POLL_READ  0x1
#define PEER_POLL_WRITE 0x2
#define PEER_POLL_ERROR 0x4 /* only reported by the host */

typedef struct peer_poll_fd_tag {
    PEER_SOCKET s;
    DWORD dwEvents;
} PEER_POLL_FD;

#define PEER_NO_DEADLINE ((ULONGLONG)-1)

/*
 * PeerGraphGetPollFds: the sockets the library wants watched, for every graph
 * of the process.  *pcFds receives how many entries are needed.  pFds may be
 * NULL when cMax is 0 (to ask for the count).  *pullDeadline receives the
 * absolute time, in the clock of the ullNow given to PeerGraphService, by
 * which PeerGraphService must be called, or PEER_NO_DEADLINE; a value at or
 * before the last ullNow means "call PeerGraphService now" (work is pending).
 * Returns S_OK; E_NOT_SUFFICIENT_BUFFER when more than cMax entries are needed
 * (the first cMax are filled, and *pcFds and *pullDeadline are set all the
 * same, so a poll-callback host may call it with cMax 0 just for the
 * deadline; otherwise call again with a larger array); E_INVALIDARG
 * (pullDeadline NULL, pFds NULL with cMax > 0, or pcFds NULL with pFds);
 * PEER_E_NOT_INITIALIZED.  With pFds and pcFds both NULL (cMax 0) it only
 * reads the deadline, in constant time, and returns S_OK: what an epoll /
 * poll-callback host calls before every wait.
 */
HRESULT PeerGraphGetPollFds(PEER_POLL_FD *pFds, ULONG cMax, ULONG *pcFds, ULONGLONG *pullDeadline);

/*
 * PeerGraphService: does all due work: accepts, connects, reads, writes,
 * timers.  pReady lists sockets the host found ready (dwEvents = what it saw,
 * PEER_POLL_ERROR included); pReady NULL means readiness is unknown and every
 * socket is tried without blocking (a game calling once per frame).  ullNow is
 * the host's monotonic time in milliseconds; the library reads no clock of its
 * own, and API calls made between two services use the last ullNow.
 * Entries for sockets the library no longer owns are ignored.  Readiness is
 * taken as level-triggered (poll, select, epoll without EPOLLET): a socket
 * read only partly is reported again by the host's next wait.
 * Returns S_OK; E_INVALIDARG (pReady NULL with cReady > 0);
 * PEER_E_NOT_INITIALIZED.  Network errors never fail this call: they close
 * the connection concerned and are reported as events.
 */
HRESULT PeerGraphService(const PEER_POLL_FD *pReady, ULONG cReady, ULONGLONG ullNow);

/*
 * PeerGraphRunOnce: for hosts without a loop.  Gets the poll set, waits with
 * the shim for at most dwMaxWaitMs (less if a deadline is nearer), then
 * services with PeerGraphGetTickCount().  Returns S_OK, PEER_E_NOT_INITIALIZED,
 * E_OUTOFMEMORY (the poll array could not be grown: retry), or the shim's wait
 * error (e.g. a failed poll(); the host should stop calling it in a loop).
 */
HRESULT PeerGraphRunOnce(DWORD dwMaxWaitMs);

/* PeerGraphGetTickCount: the shim's monotonic clock in milliseconds. */
ULONGLONG PeerGraphGetTickCount(void);

/*
 * PeerGraphSetPollCallback: for epoll/kqueue/libuv hosts.  pfn is called only
 * when a socket's wanted events change (dwEvents = the new set), and with
 * dwEvents 0 just before the library closes a socket it had announced.  It is
 * called from inside library calls; it must not call back into the library.
 * pfn NULL removes it.  When set, the current sockets are announced at once.
 * Returns S_OK or PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphSetPollCallback(void (*pfn)(PVOID pvContext, PEER_SOCKET s, DWORD dwEvents), PVOID pvContext);

/* ------------------------------------------------------------------------- */
/* Socket shim: the only code that touches the operating system's sockets.   */
/* net_posix.c and net_win32.c implement it; a port writes net_<platform>.c. */
/* Tests substitute a fake network with PeerGraphSetNetShim.                  */
/* ------------------------------------------------------------------------- */
#define PEER_NET_WOULDBLOCK (-1L)
#define PEER_NET_FAILED     (-2L)

/* One piece of a gather write (pfnSendV). */
typedef struct peer_net_buf_tag {
    const void *pv;
    ULONG cb;
} PEER_NET_BUF;

typedef struct peer_net_shim_tag {
    DWORD dwSize;   /* sizeof(PEER_NET_SHIM) */
    PVOID pvContext;/* passed to every function */
    /* Called by the first PeerGraphStartup / the last PeerGraphShutdown. */
    HRESULT (*pfnStartup)(PVOID pvContext);
    void (*pfnCleanup)(PVOID pvContext);
    /* A non-blocking TCP listener on *pAddr (port 0 = ephemeral).  The IPv6
     * unspecified address (::) gives a dual-stack socket (IPv4 peers arrive
     * v4-mapped).  *pBound receives the bound address with the real port.
     * Errors: PEER_E_ALREADY_LISTENING (port in use), E_INVALIDARG, other. */
    HRESULT (*pfnListen)(PVOID pvContext, const SOCKADDR_IN6 *pAddr, PEER_SOCKET *ps, SOCKADDR_IN6 *pBound);
    /* S_OK: *ps is a new non-blocking connected socket from *pRemote (an IPv4
     * peer as ::ffff:a.b.c.d).  S_FALSE: nothing pending.  Error otherwise. */
    HRESULT (*pfnAccept)(PVOID pvContext, PEER_SOCKET sListen, PEER_SOCKET *ps, SOCKADDR_IN6 *pRemote);
    /* Start a non-blocking connect to *pTo (v4-mapped addresses go out as
     * IPv4).  S_OK: connected already.  S_FALSE: in progress (watch for
     * WRITE).  Error: PEER_E_TCP_CONNECTION_REFUSED, PEER_E_TIMEOUT,
     * PEER_E_CONNECTION_FAILED (*ps is then not set). */
    HRESULT (*pfnConnect)(PVOID pvContext, const SOCKADDR_IN6 *pTo, PEER_SOCKET *ps);
    /* Outcome of an in-progress connect: S_OK connected, S_FALSE still in
     * progress, or one of pfnConnect's errors. */
    HRESULT (*pfnConnectResult)(PVOID pvContext, PEER_SOCKET s);
    /* > 0 bytes sent, PEER_NET_WOULDBLOCK, or PEER_NET_FAILED.  Never raises
     * SIGPIPE. */
    long (*pfnSend)(PVOID pvContext, PEER_SOCKET s, const void *pv, ULONG cb);
    /* > 0 bytes read, 0 orderly end of stream, PEER_NET_WOULDBLOCK, or
     * PEER_NET_FAILED (reset). */
    long (*pfnRecv)(PVOID pvContext, PEER_SOCKET s, void *pv, ULONG cb);
    /* Local address of a connected socket (IPv4 as v4-mapped). */
    HRESULT (*pfnLocalAddress)(PVOID pvContext, PEER_SOCKET s, SOCKADDR_IN6 *pAddr);
    /* Half-close: no more sends (FIN after queued bytes). */
    void (*pfnShutdownSend)(PVOID pvContext, PEER_SOCKET s);
    void (*pfnClose)(PVOID pvContext, PEER_SOCKET s);
    /* Wait at most dwTimeoutMs for any of pWant[0..cWant); write the ready
     * ones (with what was seen, PEER_POLL_ERROR included) to pReady (room for
     * cWant) and their number to *pcReady.  S_OK (also on timeout, with
     * *pcReady 0) or an error. */
    HRESULT (*pfnWait)(PVOID pvContext, const PEER_POLL_FD *pWant, ULONG cWant,
                       PEER_POLL_FD *pReady, ULONG *pcReady, DWORD dwTimeoutMs);
    /* Monotonic milliseconds. */
    ULONGLONG (*pfnTickCount)(PVOID pvContext);
    /* Current UTC as 100-ns intervals since 1601-01-01 (FILETIME scale). */
    ULONGLONG (*pfnUtcNow)(PVOID pvContext);
    /* Fill pv with cb unpredictable bytes. */
    HRESULT (*pfnRandom)(PVOID pvContext, void *pv, ULONG cb);
    /* Optional (may be NULL): pfnSend over cBufs pieces in order, as one
     * gather write (sendmsg / WSASend).  Lets big SendData messages go out
     * without being copied first.  Same results as pfnSend. */
    long (*pfnSendV)(PVOID pvContext, PEER_SOCKET s, const PEER_NET_BUF *pBufs, ULONG cBufs);
    /* Optional (may be NULL): pfnConnect leaving from the local address
     * *pFrom (its port is 0).  The core passes the address a graph listens on
     * when that is a specific address (not ::), so the graph's links leave
     * from the address its presence advertises: one address per node on a
     * multi-homed host, or per node in a test.  A shim may ignore pFrom when
     * it cannot reach *pTo from there (net_posix.c and net_win32.c bind it
     * when the families match and a loopback source goes to loopback). */
    HRESULT (*pfnConnectFrom)(PVOID pvContext, const SOCKADDR_IN6 *pFrom, const SOCKADDR_IN6 *pTo, PEER_SOCKET *ps);
} PEER_NET_SHIM;

/* The platform's shim (net_posix.c or net_win32.c). */
const PEER_NET_SHIM *PeerGraphGetPlatformNetShim(void);

/*
 * PeerGraphSetNetShim: selects the socket shim for the whole process.  Call it
 * before the first PeerGraphStartup (or after the last Shutdown); the table is
 * copied.  NULL restores the platform shim.
 * Returns S_OK; E_INVALIDARG (dwSize wrong or a function pointer NULL);
 * E_ACCESSDENIED (the library is started: shut it down first).
 */
HRESULT PeerGraphSetNetShim(const PEER_NET_SHIM *pShim);

/*
 * PeerGraphSetAllocator (p2pgraph extension): every allocation of the
 * library (graphs, connections, buffers, records, event and enumeration
 * blocks the host frees with PeerGraphFreeData) goes through these three
 * functions instead of malloc/realloc/free: a game engine's allocator, a
 * budget, or a test that fails the N-th allocation.  pfnRealloc(ctx, NULL, n)
 * must allocate; a NULL return is a failure the library reports as
 * E_OUTOFMEMORY (or, inside PeerGraphService, by closing the connection
 * concerned).  mbedTLS allocates through its own calloc/free (Debian builds
 * it without MBEDTLS_PLATFORM_MEMORY), and so do the shims' wait calls.
 * Call it before the first PeerGraphStartup (or after the last Shutdown):
 * memory from one allocator must go back to it.  NULL restores the C
 * library's.  Returns S_OK; E_INVALIDARG (dwSize wrong or a function NULL);
 * E_ACCESSDENIED (the library is started: shut it down first).
 */
typedef struct peer_allocator_tag {
    DWORD dwSize;
    PVOID pvContext;
    void *(*pfnAlloc)(PVOID pvContext, size_t cb);
    void *(*pfnRealloc)(PVOID pvContext, void *pv, size_t cb);
    void (*pfnFree)(PVOID pvContext, void *pv);
} PEER_ALLOCATOR;
HRESULT PeerGraphSetAllocator(const PEER_ALLOCATOR *pAllocator);

/*
 * PeerGraphSetDatabaseDirectory: where database files live (process-wide; may
 * be called before PeerGraphStartup, and survives PeerGraphShutdown: call it
 * with NULL to free the copy).
 * Default: the environment variable P2PGRAPH_DATABASE_DIR if set, else the
 * current directory.  NULL restores the default.  Graphs already open keep
 * their files.  Returns S_OK; E_INVALIDARG (empty or too long: 1024 UTF-8
 * bytes); E_OUTOFMEMORY.
 */
HRESULT PeerGraphSetDatabaseDirectory(PCWSTR pwzDirectory);

/* ------------------------------------------------------------------------- */
/* Initialisation                                                             */
/* ------------------------------------------------------------------------- */

/*
 * PeerGraphStartup: must precede every other call.  Calls are counted.
 * wVersionRequested must be PEER_GRAPH_VERSION; pVersionData receives
 * wVersion = wHighestVersion = PEER_GRAPH_VERSION.
 * Returns S_OK; E_INVALIDARG (pVersionData NULL); PEER_E_UNSUPPORTED_VERSION
 * (ask for PEER_GRAPH_VERSION); E_OUTOFMEMORY; or the shim's startup error
 * (e.g. WSAStartup failed): the library stays uninitialised.
 */
HRESULT PeerGraphStartup(WORD wVersionRequested, PPEER_VERSION_DATA pVersionData);

/*
 * PeerGraphShutdown: undoes one Startup.  The last one closes every graph
 * (neighbors get DISCONNECT, sent without blocking, best effort) and frees
 * every event registration, enumeration and listener.
 * Returns S_OK or PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphShutdown(void);

/*
 * PeerGraphFreeData: frees anything the library returned (event data,
 * properties, node info, GetNextItem arrays).  NULL is ignored.
 */
void PeerGraphFreeData(PVOID pvData);

/* ------------------------------------------------------------------------- */
/* Graphs                                                                     */
/* ------------------------------------------------------------------------- */

/*
 * PeerGraphCreate: a new graph; this node is its creator and is synchronized
 * at once (it may Listen straight away).  Required: dwSize, pwzGraphId,
 * pwzCreatorId (both 1..255 characters), dwMaxRecordSize 0 (= 60 MB) or
 * 1024..60 MB, dwScope 0..4, ulPresenceLifetime (0 = 300 s default), friendly
 * name < 256 and comment < 512 characters.  pwzDatabaseName: a file name with
 * no path (1..200 characters).  The database file is written at once.
 * Returns S_OK and *phGraph; E_INVALIDARG; E_OUTOFMEMORY;
 * PEER_E_DUPLICATE_GRAPH (a database for this graph ID, creator and name
 * already exists, or is open: PeerGraphDelete it or use PeerGraphOpen);
 * PEER_E_DATABASE_ACCESSDENIED (the file could not be written: check the
 * database directory); PEER_E_NOT_INITIALIZED.  pSecurityInterface: NULL
 * (plain MS-PPGRH) or a PEER_SECURITY_INTERFACE (see "Security" above):
 * E_INVALIDARG when malformed; PEER_E_INVALID_CREDENTIAL_INFO when its
 * certificate, key or CA cannot be used (fix pbSecurityInfo); E_FAIL when the
 * shim gave no randomness to seed TLS with.  Every node of the graph must
 * then open it with the same interface.
 */
HRESULT PeerGraphCreate(PPEER_GRAPH_PROPERTIES pGraphProperties, PCWSTR pwzDatabaseName,
                        PPEER_SECURITY_INTERFACE pSecurityInterface, HGRAPH *phGraph);

/*
 * PeerGraphOpen: opens a graph this node created or joined before (S_OK: the
 * stored database is loaded and the graph counts as synchronized), or starts
 * a new, empty, unsynchronized database (PEER_S_GRAPH_DATA_CREATED: connect to
 * a member; Listen becomes possible once STATUS_CHANGED reports
 * PEER_GRAPH_STATUS_SYNCHRONIZED).  cRecordTypeSyncPrecedence must be 0 with
 * pRecordTypeSyncPrecedence NULL, or > 0 with a non-NULL array.
 * Returns S_OK / PEER_S_GRAPH_DATA_CREATED and *phGraph; E_INVALIDARG;
 * E_OUTOFMEMORY; PEER_E_DUPLICATE_GRAPH (already open in this process: use
 * the open handle); PEER_E_INVALID_DATABASE (the file is corrupt or belongs
 * to another graph: PeerGraphDelete it); PEER_E_DATABASE_ACCESSDENIED;
 * PEER_E_NOT_INITIALIZED.  pSecurityInterface as for PeerGraphCreate (same
 * errors); it must be the one the graph's other members use.
 */
HRESULT PeerGraphOpen(PCWSTR pwzGraphId, PCWSTR pwzPeerId, PCWSTR pwzDatabaseName,
                      PPEER_SECURITY_INTERFACE pSecurityInterface, ULONG cRecordTypeSyncPrecedence,
                      const GUID *pRecordTypeSyncPrecedence, HGRAPH *phGraph);

/*
 * PeerGraphListen: accept neighbor connections on one IPv6 socket.
 * dwScope PEER_GRAPH_SCOPE_LOOPBACK binds [::1] only; every other scope binds
 * [::] dual-stack (IPv4 peers arrive v4-mapped).  wPort 0 = an ephemeral port
 * (read it back with PeerGraphGetNodeInfo(hGraph, 0, ...)); graphs of this
 * process may share a port (the CONNECT's graph ID selects the graph).
 * dwScopeId must be 0 for ANY/GLOBAL/LOOPBACK and non-zero for SITE/LINK.
 * Returns S_OK (status gains PEER_GRAPH_STATUS_LISTENING, announced by a
 * STATUS_CHANGED event); E_INVALIDARG; E_OUTOFMEMORY; PEER_E_GRAPH_NOT_READY
 * (never synchronized: connect first); PEER_E_ALREADY_LISTENING (this graph
 * listens already, or the port is taken by another program: pick another);
 * PEER_E_INVALID_GRAPH; PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphListen(HGRAPH hGraph, DWORD dwScope, DWORD dwScopeId, WORD wPort);

/*
 * PeerGraphListenAddress (p2pgraph extension): PeerGraphListen on one given
 * address and port (port 0 = ephemeral) instead of a scope: a multi-homed
 * host choosing its interface, or many nodes on one machine each with an
 * address of its own (127.0.0.x, a test network).  The graph's outbound
 * links then leave from that address too, when the shim offers
 * pfnConnectFrom.  The unspecified address [::] behaves as
 * PeerGraphListen(PEER_GRAPH_SCOPE_ANY).
 * Returns as PeerGraphListen; E_INVALIDARG also for a NULL pAddress, a wrong
 * dwSize or a family other than AF_INET6 (IPv4 goes v4-mapped).
 */
HRESULT PeerGraphListenAddress(HGRAPH hGraph, const PEER_ADDRESS *pAddress);

/*
 * PeerGraphConnect: starts a neighbor connection to the node at pAddress
 * (dwSize = sizeof(PEER_ADDRESS), sin6_family AF_INET6, non-zero port; IPv4
 * as ::ffff:a.b.c.d).  pwzPeerId NULL = whichever peer of this graph listens
 * there.  Returns at once with *pullConnectionId; the outcome arrives as
 * PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION for that ID: PEER_CONNECTED, or
 * PEER_CONNECTION_FAILED with hrConnectionFailedReason one of
 * PEER_E_TCP_CONNECTION_REFUSED, PEER_E_TIMEOUT, PEER_E_CONNECTION_FAILED
 * (network error), PEER_E_GRAPH_ID_MISMATCH, PEER_E_PEER_ID_MISMATCH,
 * PEER_E_CONNECTION_REFUSED (busy, duplicate or already connected),
 * PEER_E_ALREADY_EXISTS (a simultaneous connection to the same node won),
 * PEER_E_CONNECT_SELF, PEER_E_CONNECTION_NOT_AUTHENTICATED (closed during
 * authentication by a peer that gives no reason), PEER_E_PROTOCOL_ERROR.
 * When a busy node refers us on, the FAILED event carries the
 * ullNextConnectionId of the automatic next attempt (0 = no more).  A FAILED
 * event's ullNodeId is 0 unless the remote's node ID was learned (REFUSE
 * carries none).
 * Returns S_OK; E_INVALIDARG (NULL or malformed address, NULL out pointer,
 * over-long peer ID); E_OUTOFMEMORY; PEER_E_ALREADY_EXISTS (a neighbor link
 * to that node exists, or a connection to that address and peer ID is in
 * progress: wait for its event); PEER_E_CONNECT_SELF (the address is this
 * graph's own listener); E_OUTOFMEMORY also when the graph already holds
 * PEER_MAX_CONNECTIONS_PER_GRAPH connections (close some or wait for
 * attempts to end); PEER_E_INVALID_GRAPH; PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphConnect(HGRAPH hGraph, PCWSTR pwzPeerId, PPEER_ADDRESS pAddress, ULONGLONG *pullConnectionId);

/*
 * PeerGraphClose: sends DISCONNECT (reason LEAVING) on every connected link,
 * closes every other connection of the graph, stops its listener share and
 * invalidates the handle at once.  DISCONNECTs still queued are flushed by
 * later PeerGraphService calls for at most PEER_LINGER_MS.  Event
 * registrations of the graph are freed.
 * Returns S_OK; PEER_E_INVALID_GRAPH; PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphClose(HGRAPH hGraph);

/*
 * PeerGraphDelete: removes the database of (graph ID, peer ID, database
 * name).  Returns S_OK; E_INVALIDARG; E_ACCESSDENIED (the graph is open:
 * close it first); PEER_E_DATABASE_NOT_PRESENT (no such database);
 * PEER_E_DATABASE_ACCESSDENIED (the file could not be removed);
 * PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphDelete(PCWSTR pwzGraphId, PCWSTR pwzPeerId, PCWSTR pwzDatabaseName);

/* PeerGraphGetStatus: OR of PEER_GRAPH_STATUS_FLAGS.  S_OK, E_INVALIDARG,
 * PEER_E_INVALID_GRAPH, PEER_E_NOT_INITIALIZED. */
HRESULT PeerGraphGetStatus(HGRAPH hGraph, DWORD *pdwStatus);

/*
 * PeerGraphGetProperties: an allocated copy (PeerGraphFreeData).  Returns
 * S_OK; E_INVALIDARG; E_OUTOFMEMORY; PEER_E_GRAPH_NOT_READY (never
 * synchronized); PEER_E_INVALID_GRAPH; PEER_E_NOT_INITIALIZED.  A node that
 * joined by Open learns the creator's properties from the Graph Info record
 * during its first synchronization (PROPERTY_CHANGED is queued then).
 */
HRESULT PeerGraphGetProperties(HGRAPH hGraph, PPEER_GRAPH_PROPERTIES *ppGraphProperties);

/*
 * PeerGraphSetProperties: changes pwzFriendlyName, pwzComment,
 * ulPresenceLifetime and cPresenceMax; other members are ignored.  Persists
 * and queues PEER_GRAPH_EVENT_PROPERTY_CHANGED.  Returns S_OK; E_INVALIDARG
 * (dwSize, over-long strings, lifetime below 300 other than 0); E_OUTOFMEMORY;
 * E_ACCESSDENIED (only the creator may change properties);
 * PEER_E_GRAPH_NOT_READY; PEER_E_INVALID_GRAPH; PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphSetProperties(HGRAPH hGraph, PPEER_GRAPH_PROPERTIES pGraphProperties);

/*
 * PeerGraphGetNodeInfo: ullNodeId 0 = the local node: its peer ID, node ID
 * and listening addresses (the bound address with the real port; [::] when
 * listening dual-stack).  Another node's ID gives what its Presence record
 * says (peer ID, addresses, attributes), or for a neighbor without one its
 * peer ID and the addresses it advertised.  Returns S_OK and an allocated PEER_NODE_INFO
 * (PeerGraphFreeData); E_INVALIDARG; E_OUTOFMEMORY; PEER_E_NODE_NOT_FOUND
 * (not the local node, a node with presence, nor a neighbor); PEER_E_INVALID_GRAPH;
 * PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphGetNodeInfo(HGRAPH hGraph, ULONGLONG ullNodeId, PPEER_NODE_INFO *ppNodeInfo);

/*
 * PeerGraphEnumNodes: a snapshot of the nodes that publish presence (their
 * Presence records: every listening node by default, see cPresenceMax),
 * optionally only those of one peer ID.  Items are PEER_NODE_INFO* (node ID,
 * peer ID, listening addresses, attribute string).  Returns S_OK;
 * E_INVALIDARG; E_OUTOFMEMORY; PEER_E_GRAPH_NOT_READY (not synchronized yet:
 * wait for the SYNCHRONIZED status); PEER_E_INVALID_GRAPH;
 * PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphEnumNodes(HGRAPH hGraph, PCWSTR pwzPeerId, HPEERENUM *phPeerEnum);

/*
 * PeerGraphSetPresence: TRUE publishes this node's Presence record whatever
 * cPresenceMax says (once the node listens and is synchronized); FALSE
 * returns to the graph's policy (a published record stays until the policy
 * removes it).  Returns S_OK; PEER_E_INVALID_GRAPH; PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphSetPresence(HGRAPH hGraph, BOOL fPresent);

/*
 * PeerGraphSetNodeAttributes: the local node's free-form attribute string,
 * carried in its Presence record (NULL or "" clears it); other nodes see
 * NODE_CHANGED / PEER_NODE_CHANGE_UPDATED, the local registrations get one
 * with ullNodeId 0.  Returns S_OK; E_INVALIDARG (longer than
 * PEER_MAX_NODE_ATTRIBUTES_CHARS); E_OUTOFMEMORY; PEER_E_INVALID_GRAPH;
 * PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphSetNodeAttributes(HGRAPH hGraph, PCWSTR pwzAttributes);

/* ------------------------------------------------------------------------- */
/* Events                                                                     */
/* ------------------------------------------------------------------------- */

/*
 * PeerGraphRegisterEvent: a queue of the listed event types of one graph.
 * hEvent: on Windows an optional event handle signalled (SetEvent) whenever an
 * event is queued; elsewhere it must be NULL (pure polling).  pType in a
 * registration filters RECORD_CHANGED and SYNCHRONIZED by record type (NULL =
 * all).  At most PEER_MAX_EVENTS_QUEUED events wait per registration; further
 * ones are dropped (never silently: PeerGraphGetEventData then reports a
 * STATUS_CHANGED with the current status first, so the host re-reads state).
 * Returns S_OK and *phPeerEvent; E_INVALIDARG (NULL pointers, count 0, an
 * unknown event type, a non-NULL hEvent off Windows); E_OUTOFMEMORY;
 * PEER_E_INVALID_GRAPH; PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphRegisterEvent(HGRAPH hGraph, HANDLE hEvent, ULONG cEventRegistrations,
                               PEER_GRAPH_EVENT_REGISTRATION *pEventRegistrations, HPEEREVENT *phPeerEvent);

/* PeerGraphUnregisterEvent: frees the registration and its queued events.
 * S_OK; E_INVALIDARG (NULL); PEER_E_EVENT_HANDLE_NOT_FOUND (unknown or already
 * freed, e.g. by PeerGraphClose); PEER_E_NOT_INITIALIZED. */
HRESULT PeerGraphUnregisterEvent(HPEEREVENT hPeerEvent);

/*
 * PeerGraphGetEventData: pops the oldest event.  S_OK and an allocated
 * PEER_GRAPH_EVENT_DATA (PeerGraphFreeData; every pointer inside lives in the
 * same block); PEER_S_NO_EVENT_DATA (*ppEventData NULL: the queue is empty,
 * call PeerGraphService and try later); E_INVALIDARG; E_OUTOFMEMORY (the event
 * stays queued); PEER_E_EVENT_HANDLE_NOT_FOUND; PEER_E_NOT_INITIALIZED.
 * After events were dropped (PEER_MAX_EVENTS_QUEUED reached), the next one
 * popped is a STATUS_CHANGED when the registration includes that type: some
 * events were lost, re-read the state you track.
 */
HRESULT PeerGraphGetEventData(HPEEREVENT hPeerEvent, PPEER_GRAPH_EVENT_DATA *ppEventData);

/* ------------------------------------------------------------------------- */
/* Connections and enumerations                                               */
/* ------------------------------------------------------------------------- */

/*
 * PeerGraphEnumConnections: a snapshot of the CONNECTED links of the kinds in
 * dwFlags (PEER_CONNECTION_NEIGHBOR and/or PEER_CONNECTION_DIRECT; at least
 * one).  Items are PEER_CONNECTION_INFO*.  S_OK; E_INVALIDARG; E_OUTOFMEMORY;
 * PEER_E_INVALID_GRAPH; PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphEnumConnections(HGRAPH hGraph, DWORD dwFlags, HPEERENUM *phPeerEnum);

/*
 * PeerGraphOpenDirectConnection: starts a direct (private, non-flooding)
 * connection to the node pwzPeerId (required: several identities may share an
 * address) listening at pAddress (as for PeerGraphConnect).  Returns at once
 * with *pullConnectionId; the outcome arrives as
 * PEER_GRAPH_EVENT_DIRECT_CONNECTION: PEER_CONNECTED (the ID now works with
 * PeerGraphSendData), or PEER_CONNECTION_FAILED with the reasons listed for
 * PeerGraphConnect; PEER_E_CONNECTION_REFUSED when the remote application is
 * not registered for PEER_GRAPH_EVENT_DIRECT_CONNECTION (it then refuses
 * direct connections, as on Windows).  Several direct connections to one node
 * may coexist.  Direct links never carry records or synchronization and do
 * not count as neighbors.
 * Returns S_OK; E_INVALIDARG (NULL or malformed peer ID, address or out
 * pointer); PEER_E_CONNECT_SELF (our own peer ID at our own listener);
 * E_OUTOFMEMORY (also at PEER_MAX_CONNECTIONS_PER_GRAPH);
 * PEER_E_INVALID_GRAPH; PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphOpenDirectConnection(HGRAPH hGraph, PCWSTR pwzPeerId, PPEER_ADDRESS pAddress,
                                      ULONGLONG *pullConnectionId);

/*
 * PeerGraphSendData: queues cbData bytes of application data of type *pType
 * (any GUID but the protocol's reserved Ping type) on a CONNECTED neighbor or
 * direct connection, and writes what the socket takes at once.  The receiver
 * gets one PEER_GRAPH_EVENT_INCOMING_DATA per call (if registered for it),
 * in order; 0 bytes is allowed.  Data is never dropped silently: it arrives,
 * or the connection fails and both sides get a DISCONNECTED event.
 * Flow control: each connection queues at most its limit of application
 * bytes (PEER_DEFAULT_DATA_QUEUE, see PeerGraphSetDataQueueLimit; each
 * message counts cbData + PEER_DATA_MSG_OVERHEAD); one message is always
 * accepted into an empty queue, so the bound is max(limit, one message).
 * A receiver that does not take its events stops being read (TCP pushes back
 * to the sender) once PEER_MAX_INCOMING_DATA bytes wait in a registration.
 * Large messages are cut into 16 KB pieces between p2pgraph nodes so that
 * records and sync on the same neighbor link are not held up (PROTOCOL.md).
 * Writes: the first SendData on a connection after a PeerGraphService is
 * written at once (a big one straight from pvData when nothing is queued);
 * further ones in the same round are queued and go out together at the next
 * PeerGraphService, small ones sharing one write.  Host loops that call
 * SendData many times per frame thus make few system calls.
 * Returns S_OK; E_INVALIDARG (NULL pType, the Ping type, NULL pvData with
 * cbData > 0, cbData > PEER_MAX_DATA_SIZE); PEER_E_SEND_QUEUE_FULL (nothing
 * queued: retry after PEER_GRAPH_EVENT_SEND_READY or when
 * PeerGraphGetDataQueue shows room); PEER_E_CONNECTION_NOT_FOUND (no such
 * connection in this graph, not yet CONNECTED, or closing/closed);
 * E_OUTOFMEMORY; PEER_E_INVALID_GRAPH; PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphSendData(HGRAPH hGraph, ULONGLONG ullConnectionId, const GUID *pType, ULONG cbData,
                          PVOID pvData);

/*
 * PeerGraphCloseDirectConnection: closes a direct connection (or cancels one
 * in progress).  Data already accepted by PeerGraphSendData is sent first,
 * then DISCONNECT; the remote sees all of it, then DIRECT_CONNECTION
 * PEER_DISCONNECTED.  If the remote does not read for PEER_LINGER_MS the rest
 * is dropped and the socket closed.  Locally DIRECT_CONNECTION
 * PEER_DISCONNECTED (hr S_OK) is queued at once, or PEER_CONNECTION_FAILED
 * with E_ABORT for an attempt in progress.
 * Returns S_OK; PEER_E_CONNECTION_NOT_FOUND (unknown, a neighbor connection,
 * or already closed); PEER_E_INVALID_GRAPH; PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphCloseDirectConnection(HGRAPH hGraph, ULONGLONG ullConnectionId);

/*
 * PeerGraphSetMaintenanceProfile (p2pgraph extension): PEER_MAINTENANCE_COMPAT
 * (default) runs graph maintenance on MS-PPGRH's timers (300 s, 30 s alone) and
 * learns of a dead neighbor only from TCP.  PEER_MAINTENANCE_FAST runs it every
 * PEER_FAST_MAINT_MS (PEER_FAST_MAINT_IDLE_MS alone), keeps alive a neighbor
 * link idle for PEER_FAST_KEEPALIVE_MS, and when the other node runs the fast
 * profile too (agreed in the handshake) closes a link silent for
 * PEER_FAST_DEAD_MS (NEIGHBOR_CONNECTION PEER_DISCONNECTED, PEER_E_TIMEOUT) and
 * refills the neighbor set at once.  Between two fast nodes the keepalive is a
 * 2-byte frame that also carries the signature owner's beat (PROTOCOL.md
 * P17), and a record's renewal (a version that moves only its times, such as
 * every presence refresh) goes as a 44-byte entry riding in the next write
 * instead of a FLOOD of the whole record (P19); to a plain peer the keepalive
 * is a Ping and a renewal a FLOOD.  Set it before Listen/Connect so every
 * link agrees on it.  Returns S_OK; E_INVALIDARG; PEER_E_INVALID_GRAPH;
 * PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphSetMaintenanceProfile(HGRAPH hGraph, PEER_MAINTENANCE_PROFILE profile);

/*
 * PeerGraphGetTimers / PeerGraphSetTimers (p2pgraph extension): the graph's
 * maintenance timers (PEER_GRAPH_TIMERS; PeerGraphSetMaintenanceProfile sets
 * them to the profile's values, set them after it).  New values apply at
 * once.  Set returns E_INVALIDARG for a wrong dwSize, a maintenance period
 * under 100 ms, a retry or keepalive under 10 ms, a dead time under twice
 * the keepalive, a contact or partition range with min under 10 ms or above
 * its max, a signature staleness other than 0 under 300 ms, or anything
 * above a day.  Both return S_OK;
 * E_INVALIDARG (NULL); PEER_E_INVALID_GRAPH; PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphGetTimers(HGRAPH hGraph, PEER_GRAPH_TIMERS *pTimers);
HRESULT PeerGraphSetTimers(HGRAPH hGraph, const PEER_GRAPH_TIMERS *pTimers);

/*
 * PeerGraphSetDataQueueLimit (p2pgraph extension): the application-data queue
 * limit of one connection, or with ullConnectionId 0 the default for this
 * graph's future connections.  Lowering it below what is queued drops
 * nothing; SendData refuses until the queue is under it.
 * Returns S_OK; E_INVALIDARG (cbLimit outside PEER_MIN_DATA_QUEUE ..
 * PEER_MAX_DATA_QUEUE); PEER_E_CONNECTION_NOT_FOUND; PEER_E_INVALID_GRAPH;
 * PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphSetDataQueueLimit(HGRAPH hGraph, ULONGLONG ullConnectionId, ULONG cbLimit);

/*
 * PeerGraphGetDataQueue (p2pgraph extension): application bytes queued on a
 * connection (counted as SendData counts them) and its limit.  Either out
 * pointer may be NULL.  Returns S_OK; PEER_E_CONNECTION_NOT_FOUND;
 * PEER_E_INVALID_GRAPH; PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphGetDataQueue(HGRAPH hGraph, ULONGLONG ullConnectionId, ULONG *pcbQueued, ULONG *pcbLimit);

/* PeerGraphGetItemCount: items left in the enumeration.  S_OK; E_INVALIDARG;
 * PEER_E_NOT_FOUND (unknown handle); PEER_E_NOT_INITIALIZED. */
HRESULT PeerGraphGetItemCount(HPEERENUM hPeerEnum, ULONG *pCount);

/*
 * PeerGraphGetNextItem: in *pCount how many items are wanted, out how many
 * were returned (0 = the end).  *pppvItems is one allocated block (array of
 * pointers and the items): free it with one PeerGraphFreeData (NULL when 0
 * items).  S_OK; E_INVALIDARG; E_OUTOFMEMORY (nothing consumed);
 * PEER_E_NOT_FOUND (unknown handle); PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphGetNextItem(HPEERENUM hPeerEnum, ULONG *pCount, PVOID **pppvItems);

/* PeerGraphEndEnumeration: frees it.  S_OK; E_INVALIDARG (NULL);
 * PEER_E_NOT_FOUND (unknown or already ended); PEER_E_NOT_INITIALIZED. */
HRESULT PeerGraphEndEnumeration(HPEERENUM hPeerEnum);

/* ------------------------------------------------------------------------- */
/* Records                                                                    */
/* A record's times are peer time (FILETIME units); convert with             */
/* PeerGraphUniversalTimeToPeerTime.  RECORD_CHANGED events are queued for   */
/* local changes as well as for changes arriving from the graph.             */
/* ------------------------------------------------------------------------- */

/*
 * PeerGraphAddRecord: stores a new record and floods it to every neighbor.
 * Required: dwSize = sizeof(PEER_RECORD), a type that is not GUID_NULL nor one
 * of the four internal types {00000100..00000400-0000-0000-0000-000000000000},
 * ftExpiration later than the current peer time, dwFlags 0.  Optional: data,
 * pwzAttributes (attribute XML), securityData.  pwzCreatorId must be NULL or
 * this node's peer ID.  id, dwVersion, times and pwzModifiedById are set by
 * the library.  On S_OK *pRecordId is the new ID, the record is in the
 * database file (written to the OS; see PEER_DB_SYNC_MS) and RECORD_CHANGED
 * (ADDED) is queued.
 * Errors: E_INVALIDARG (any of the rules above, NULL pointers);
 * PEER_E_MAX_RECORD_SIZE_EXCEEDED (data + attributes over dwMaxRecordSize);
 * PEER_E_INVALID_ATTRIBUTES (attribute XML not valid); PEER_E_GRAPH_NOT_READY
 * (never synchronized: wait for the SYNCHRONIZED status);
 * PEER_E_DATABASE_ACCESSDENIED (the file could not be written: nothing was
 * changed); PEER_E_DISK_FULL (the graph holds its record limit, see
 * PeerGraphSetRecordLimits: delete records or raise it); an error from the
 * security interface's pfnSecureRecord (nothing was changed);
 * E_OUTOFMEMORY; PEER_E_INVALID_GRAPH; PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphAddRecord(HGRAPH hGraph, PPEER_RECORD pRecord, GUID *pRecordId);

/*
 * PeerGraphUpdateRecord: a new version of the record pRecord->id: data,
 * attributes, securityData and ftExpiration (equal or later only) are
 * replaced; the type must be unchanged.  Version + 1, pwzModifiedById = this
 * peer.  Errors: PEER_E_RECORD_NOT_FOUND (no such live record); E_INVALIDARG
 * (type changed, expiration earlier, other rules of Add);
 * PEER_E_MAX_RECORD_SIZE_EXCEEDED; PEER_E_INVALID_ATTRIBUTES;
 * PEER_E_GRAPH_NOT_READY; PEER_E_DATABASE_ACCESSDENIED; E_OUTOFMEMORY;
 * PEER_E_INVALID_GRAPH; PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphUpdateRecord(HGRAPH hGraph, PPEER_RECORD pRecord);

/*
 * PeerGraphDeleteRecord: fLocal FALSE marks the record deleted graph-wide (a
 * tombstone is flooded and kept until the record's expiration); fLocal TRUE
 * drops it from this node only (it comes back at the next synchronization).
 * RECORD_CHANGED (DELETED) is queued.  Errors: PEER_E_RECORD_NOT_FOUND;
 * E_ACCESSDENIED (an internal record); E_INVALIDARG; PEER_E_GRAPH_NOT_READY;
 * PEER_E_DATABASE_ACCESSDENIED; E_OUTOFMEMORY; PEER_E_INVALID_GRAPH;
 * PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphDeleteRecord(HGRAPH hGraph, const GUID *pRecordId, BOOL fLocal);

/* PeerGraphGetRecord: an allocated copy (PeerGraphFreeData).  S_OK;
 * PEER_E_RECORD_NOT_FOUND (unknown, deleted or expired); E_INVALIDARG;
 * PEER_E_GRAPH_NOT_READY; E_OUTOFMEMORY; PEER_E_INVALID_GRAPH;
 * PEER_E_NOT_INITIALIZED. */
HRESULT PeerGraphGetRecord(HGRAPH hGraph, const GUID *pRecordId, PPEER_RECORD *ppRecord);

/*
 * PeerGraphEnumRecords: the live records of a type and/or creator (NULL = any;
 * internal record types are listed only when asked for by type).  The
 * enumeration holds IDs: GetNextItem returns PEER_RECORD* copies of those
 * still live then.  S_OK; E_INVALIDARG; PEER_E_GRAPH_NOT_READY; E_OUTOFMEMORY;
 * PEER_E_INVALID_GRAPH; PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphEnumRecords(HGRAPH hGraph, const GUID *pRecordType, PCWSTR pwzPeerId, HPEERENUM *phPeerEnum);

/*
 * PeerGraphSearchRecords: the live application records matching a
 * <peersearch> query over attributes (see README).  S_OK; PEER_E_INVALID_SEARCH
 * (the query is not valid); E_INVALIDARG (NULL, or a bad escape in a clause
 * value); PEER_E_GRAPH_NOT_READY; E_OUTOFMEMORY; PEER_E_INVALID_GRAPH;
 * PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphSearchRecords(HGRAPH hGraph, PCWSTR pwzCriteria, HPEERENUM *phPeerEnum);

/* PeerGraphValidateDeferredRecords: runs pfnValidateRecord again on records
 * it deferred (PEER_E_DEFERRED_VALIDATION): all of them (cRecordIds 0,
 * pRecordIds ignored) or those listed (IDs not deferred are ignored).  Each
 * is then handled as if just received: stored, flooded to the neighbors and
 * announced with RECORD_CHANGED when accepted and still newer than what the
 * graph holds; dropped when rejected or expired meanwhile; deferred again
 * when the validator says so.  The deferred list holds at most
 * PEER_MAX_DEFERRED_RECORDS records and PEER_MAX_DEFERRED_BYTES bytes (the
 * newest version of each record); beyond, new deferrals are dropped (counted
 * in PEER_DATABASE_INFO.cRejectedRecords).  Without a validator nothing is
 * ever deferred.  S_OK; E_INVALIDARG (cRecordIds > 0 with NULL);
 * PEER_E_INVALID_GRAPH; PEER_E_NOT_INITIALIZED. */
HRESULT PeerGraphValidateDeferredRecords(HGRAPH hGraph, ULONG cRecordIds, const GUID *pRecordIds);

/*
 * PeerGraphSetRecordLimits (p2pgraph extension): the most records, and the
 * most bytes of records (their wire form, deletion marks included), the
 * graph holds; 0 keeps the current value.  Defaults PEER_DEFAULT_MAX_RECORDS
 * and PEER_DEFAULT_MAX_RECORD_BYTES.  A new record beyond either limit is
 * refused: from the network it is dropped (counted in cRejectedRecords, the
 * link stays); PeerGraphAddRecord / UpdateRecord return PEER_E_DISK_FULL.
 * Records already held are kept when a limit is lowered.  Per graph, not
 * persisted.  S_OK; PEER_E_INVALID_GRAPH; PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphSetRecordLimits(HGRAPH hGraph, ULONG cMaxRecords, ULONGLONG cbMaxBytes);

/* Peer time = UTC - the graph's peer time delta (learned from neighbors).
 * S_OK; E_INVALIDARG; PEER_E_INVALID_GRAPH; PEER_E_NOT_INITIALIZED. */
HRESULT PeerGraphUniversalTimeToPeerTime(HGRAPH hGraph, FILETIME *pftUniversalTime, FILETIME *pftPeerTime);
HRESULT PeerGraphPeerTimeToUniversalTime(HGRAPH hGraph, FILETIME *pftPeerTime, FILETIME *pftUniversalTime);

/*
 * PeerGraphExportDatabase: writes the graph's database (metadata and every
 * record) to pwzFilePath, overwriting it, in the database file format of
 * PROTOCOL.md 3b.  S_OK; E_INVALIDARG; E_ACCESSDENIED (the file could not be
 * written); E_OUTOFMEMORY; PEER_E_INVALID_GRAPH; PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphExportDatabase(HGRAPH hGraph, PCWSTR pwzFilePath);

/*
 * PeerGraphImportDatabase: merges an exported database into a graph opened
 * with PeerGraphOpen, before Listen or Connect: each valid record newer than
 * the local copy is stored (RECORD_CHANGED events); a file from a
 * synchronized node makes this graph synchronized.  S_OK; E_INVALIDARG;
 * PEER_E_GRAPH_IN_USE (Listen or Connect was called on this handle);
 * E_ACCESSDENIED (the handle came from PeerGraphCreate);
 * PEER_E_DATABASE_NOT_PRESENT (no such file); PEER_E_INVALID_DATABASE (not
 * an export of this graph ID and peer ID); E_OUTOFMEMORY;
 * PEER_E_INVALID_GRAPH; PEER_E_NOT_INITIALIZED.
 */
HRESULT PeerGraphImportDatabase(HGRAPH hGraph, PCWSTR pwzFilePath);

/* p2pgraph extension: the state of a graph's database. */
typedef struct peer_database_info_tag {
    DWORD dwSize;                  /* sizeof(PEER_DATABASE_INFO) */
    ULONG cRecords;                /* records held, tombstones included */
    ULONGLONG cbRecords;           /* their wire bytes */
    ULONGLONG cbFile;              /* the database file's size */
    ULONGLONG cbTornTailDropped;   /* bytes of an incomplete last write dropped at Open */
    ULONG cCorruptEntriesDropped;  /* entries whose checksum failed at Open */
    ULONG cRejectedRecords;        /* records from the network that failed validation */
} PEER_DATABASE_INFO;

/* PeerGraphGetDatabaseInfo: S_OK; E_INVALIDARG (NULL or wrong dwSize);
 * PEER_E_INVALID_GRAPH; PEER_E_NOT_INITIALIZED. */
HRESULT PeerGraphGetDatabaseInfo(HGRAPH hGraph, PEER_DATABASE_INFO *pInfo);

#ifdef __cplusplus
}
#endif
#endif /* P2PGRAPH_H */
