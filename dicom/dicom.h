/*
 * dicom.h - the DICOM module's C API: reading DICOM files (through a thin C++ adapter over DCMTK,
 * with OpenJPEG for JPEG 2000), PNG and JPEG images, the applicability gate, and the one
 * preprocessing path that turns any of them into the model's input.
 *
 * Design. Everything a caller sees is plain C: opaque handles (dcm_file), plain structs, cxr_err
 * returns and an error text "NAME: problem" in a caller-supplied buffer. No C++ type or exception
 * crosses this header. Decoding is bounded: files over DCM_MAX_FILE_BYTES and images whose
 * decoded pixel data would exceed DCM_MAX_DECODED_BYTES are refused before anything is
 * allocated for them. All functions are safe to call from several threads at once on different
 * handles; dcm_global_init() registers the codecs and loads the data dictionary once (it is
 * also called lazily, but a daemon should call it before starting threads).
 *
 * The pixel path (pixel.c, name PX_PREPROC_NAME): decoded samples -> Modality LUT (rescale) ->
 * VOI (the first window in the header, else the first VOI LUT Sequence item, else a robust
 * percentile window 0.5..99.5 %) -> MONOCHROME1 inverted -> [0,1] -> area-averaged resize to
 * size x size keeping the aspect ratio (centred, padded with 0) -> normalisation (mean, std).
 * PNG and JPEG take the same path: an 8-bit image is already a display image (identity VOI,
 * v / 255); a 16-bit one gets the percentile window; colour becomes luminance
 * (0.299 R + 0.587 G + 0.114 B).
 */
#ifndef CXR_DICOM_H
#define CXR_DICOM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the pixel API contract (shared with model/ and trainer/) -------------------------- */

#define PX_PREPROC_NAME "cxr-pixel-v1" /* recorded in model files; names this exact path */
struct px_spec {                       /* the model's input, read from the model file */
    int size;                          /* square side in pixels, e.g. 224 */
    int channels;                      /* 1, or 3 = the grey image replicated */
    float mean, std;                   /* normalised value = (v - mean) / std, v in [0,1] */
};
struct px_verdict { /* the applicability gate */
    bool applicable;
    char reason[160]; /* why not (or "" when applicable) */
};
/* DICOM, PNG or JPEG file (detected by content, not extension) -> decoded samples -> Modality LUT
 * -> VOI -> MONOCHROME1 inverted -> [0,1] -> area-averaged resize to size x size keeping the
 * aspect ratio (centred, the rest padded with 0) -> out (size*size floats, row-major).
 * ret_verdict may be NULL; for PNG/JPEG it is applicable unless too small. errbuf receives
 * "FILE: problem" on failure. */
cxr_err px_load_unit(const char *path, int size, float *out, struct px_verdict *ret_verdict,
                     char *errbuf, size_t errlen);
cxr_err px_load_unit_mem(const void *data, size_t len, const char *name, int size, float *out,
                         struct px_verdict *ret_verdict, char *errbuf, size_t errlen);
/* [0,1] size*size image -> the model's CHW input (channels*size*size floats). */
void px_normalize(const struct px_spec *spec, const float *unit, float *out);
/* px_load_unit + px_normalize. */
cxr_err px_load_file(const char *path, const struct px_spec *spec, float *out,
                     struct px_verdict *ret_verdict, char *errbuf, size_t errlen);

/* ---- limits ------------------------------------------------------------------------------ */

#define DCM_MAX_FILE_BYTES ((size_t)1 << 30)      /* 1 GiB: larger files are refused */
#define DCM_MAX_DECODED_BYTES ((size_t)1 << 29)   /* 512 MiB of decoded pixel data, all frames */
#define PX_MAX_SIDE 32768                         /* rows or columns above this are refused */
#define PX_MIN_SIDE 256                           /* the gate: smaller images are not scored */
#define PX_MAX_SIZE 4096                          /* largest model input side */

/* ---- decoded images ---------------------------------------------------------------------- */

/* Frame 0 of an image, as decoded: stored values (sign-extended, masked to BitsStored),
 * channels interleaved (1 = grey, 3 = RGB). Owned by the struct: release with px_image_done(). */
struct px_image {
    int width, height, channels;
    int bits;       /* significant bits per sample */
    bool is_signed;
    int32_t *samples; /* width * height * channels */
};
void px_image_done(struct px_image *img);

/* What the pixel path did to one image, for `cxrtriage preprocess` and the tests. */
enum px_voi_kind { PX_VOI_NONE, PX_VOI_WINDOW, PX_VOI_LUT, PX_VOI_PERCENTILE };
struct px_info {
    enum px_voi_kind voi;
    double window_center, window_width; /* the window used (WINDOW, PERCENTILE), in modality units */
    bool inverted;                      /* MONOCHROME1 (or an INVERSE Presentation LUT) */
    int width, height;                  /* decoded size */
    int out_width, out_height;          /* the image's size inside the size x size output */
    char kind[16];                      /* "DICOM", "PNG" or "JPEG" */
};

/* ---- DICOM -------------------------------------------------------------------------------- */

typedef struct dcm_file dcm_file;

/* The attributes the rest of cxrtriage needs. Strings are "" when absent; numbers are 0 and
 * has_* false when absent. Strings are trimmed of DICOM padding. */
struct dcm_info {
    char sop_class_uid[65], sop_instance_uid[65], study_uid[65], series_uid[65];
    char patient_id[65], patient_name[330], accession[65];
    char study_date[17], study_time[32];
    char modality[17], body_part[65], view_position[17];
    char photometric[33];
    char transfer_syntax[65];      /* UID of the transfer syntax as read */
    char transfer_syntax_name[96]; /* its name, or "unknown" */
    char presentation_lut_shape[17];
    int rows, columns, bits_allocated, bits_stored, high_bit, pixel_representation;
    int samples_per_pixel, planar_configuration, number_of_frames;
    bool has_rescale;
    double rescale_slope, rescale_intercept;
    int n_windows; /* windows in the header; the first is window_center/width */
    double window_center, window_width;
    bool has_voi_lut;             /* VOI LUT Sequence present (first item used) */
    int voi_lut_entries, voi_lut_first, voi_lut_bits;
    const uint16_t *voi_lut_data; /* voi_lut_entries values, owned by the dcm_file */
    bool has_pixel_spacing;
    double pixel_spacing[2]; /* row, column spacing in mm */
    bool has_pixel_data;
    bool has_meta;            /* a File Meta Information header (DICM preamble) was present */
};

/* Registers the JPEG, JPEG-LS and RLE decoders and loads the data dictionary, once. Call it
 * before starting threads; other functions call it too. Returns CXR_EDICOM when the data
 * dictionary cannot be loaded. */
cxr_err dcm_global_init(void);

/* Parses a DICOM file held in memory (data must stay valid during the call only). name names
 * the input in error texts. Fails with CXR_EPARSE (not DICOM, truncated or malformed header),
 * CXR_ELIMIT, CXR_ENOMEM. */
cxr_err dcm_file_open_mem(const void *data, size_t len, const char *name, dcm_file **ret,
                          char *errbuf, size_t errlen);
/* Like dcm_file_open_mem() for data that are the whole content of the file open on fd (a
 * mapping of it: px_map_file()): DCMTK reads the file itself, so the bytes are not copied; fd
 * is duplicated and may be closed after the call. fd < 0 is dcm_file_open_mem(). */
cxr_err dcm_file_open_fd(const void *data, size_t len, int fd, const char *name, dcm_file **ret,
                         char *errbuf, size_t errlen);
/* Reads path (at most DCM_MAX_FILE_BYTES) and parses it like dcm_file_open_mem(). */
cxr_err dcm_file_open(const char *path, dcm_file **ret, char *errbuf, size_t errlen);
const struct dcm_info *dcm_file_info(const dcm_file *f);
/* Decodes frame 0 into ret_img (caller releases it with px_image_done()). Fails with
 * CXR_EUNSUPPORTED (transfer syntax, photometric or bit depth we do not handle),
 * CXR_EDICOM (corrupt pixel data, size mismatch), CXR_ELIMIT (decoded size over the cap). */
cxr_err dcm_file_decode(dcm_file *f, struct px_image *ret_img, char *errbuf, size_t errlen);
void dcm_file_free(dcm_file *f);

/* The applicability gate over a DICOM header (see DESIGN.md): CR, DX or Secondary Capture;
 * BodyPartExamined CHEST when given; ViewPosition PA or AP when given; one frame; at least
 * PX_MIN_SIDE pixels a side; grayscale. */
void dcm_gate(const struct dcm_info *info, struct px_verdict *ret);

/* ---- the report fields: a header read for the HL7 / FHIR reports (adapter/dcm_fields.cpp) --
 *
 * DESIGN. dcm_read_report_fields() reads a DICOM file's header only. The file (at most
 * DCM_MAX_FILE_BYTES) is first walked, tags and lengths only, up to the top-level Pixel Data
 * (dcm_scan_header(), over a read-only mapping), so no length runs past the file and sequences
 * are not nested deeper than the walker allows; then DCMTK's loadFileUntilTag reads it and stops
 * at the Pixel Data, which is never read or decoded. No value longer than DCM_RF_MAX_VALUE bytes
 * is loaded. Every text (SH, LO, PN) is transcoded to UTF-8 from the Specific Character Set
 * (0008,0005) of its own data set (a sequence item's own (0008,0005) when it has one) through
 * DCMTK's DcmSpecificCharacterSet (glibc iconv in Debian's build): the single-byte sets
 * (ISO_IR 100..203, ISO 2022 IR 100.. with code extensions), ISO_IR 192 (checked to be valid
 * UTF-8), GB18030 / GBK, Korean ISO 2022 IR 149, Chinese ISO 2022 IR 58. glibc has no JIS X 0208
 * / 0212 converter under the names DCMTK asks for, so Japanese (ISO 2022 IR 13 / 87 / 159, with
 * IR 6) is decoded here by escape sequence, with glibc's ISO-2022-JP-2 for the two-byte runs.
 * UI, DA, TM and CS values are the default repertoire (ASCII). A value that cannot be converted
 * (unknown or unsupported character set, bytes illegal in it, non-ASCII bytes without a Specific
 * Character Set) does not fail the call: that field keeps its ASCII characters, each other
 * character becomes '?', and warnings / warning_text say so. A value longer than its field
 * (non-conforming data) is cut at a UTF-8 character boundary (DCM_RF_TRUNCATED). Leading and
 * trailing spaces are removed; multi-valued fields keep DICOM's backslash; a PN keeps its empty
 * trailing components as encoded. Absent attributes are "". The sizes hold the longest
 * conforming value in UTF-8 (up to 4 bytes a character) plus the NUL. The order fields that
 * images usually carry in the Request Attributes Sequence (0040,0275) are taken from its first
 * item when absent at the top level. No value (PHI) is ever written to errbuf or warning_text:
 * field names and character set names only. */

#define DCM_RF_MAX_VALUE 65536 /* longest value read, bytes (conforming values are far shorter) */

/* Bits of dcm_report_fields.warnings. */
enum dcm_rf_warning {
    /* a value was not fully convertible: its other characters are '?' */
    DCM_RF_LOSSY = 1u << 0,
    /* (0008,0005) names a set neither DCMTK / iconv nor the Japanese decoder can convert */
    DCM_RF_UNKNOWN_CHARSET = 1u << 1,
    /* a value was longer than its field (cut) or than DCM_RF_MAX_VALUE (left out) */
    DCM_RF_TRUNCATED = 1u << 2,
};

struct dcm_report_fields {
    char sop_class_uid[65], study_uid[65], series_uid[65], sop_instance_uid[65]; /* UI */
    char study_date[9];             /* (0008,0020) DA as in the file, "YYYYMMDD" */
    char study_time[17];            /* (0008,0030) TM as in the file, "HHMMSS.FFFFFF" */
    char timezone_offset[6];        /* (0008,0201) "+0100", or "" */
    char patient_id[257];           /* (0010,0020) LO */
    char issuer_of_patient_id[257]; /* (0010,0021) LO */
    /* (0010,0010) PN in UTF-8, as in DICOM: components separated by '^', component groups
     * (alphabetic=ideographic=phonetic) by '=' */
    char patient_name[776];
    char birth_date[9];              /* (0010,0030) DA */
    char sex[17];                    /* (0010,0040) CS "M", "F", "O" */
    char accession[65];              /* (0008,0050) SH; else the Request Attributes Sequence's */
    char placer_order[257];          /* (0040,2016) LO; else the Request Attributes Sequence's */
    char filler_order[257];          /* (0040,2017) LO; else the Request Attributes Sequence's */
    char requested_procedure_id[65]; /* (0040,1001) SH; else the Request Attributes Sequence's */
    char scheduled_step_id[65];      /* (0040,0009) SH; else the Request Attributes Sequence's */
    /* The first item of Procedure Code Sequence (0008,1032), else of Requested Procedure Code
     * Sequence (0032,1064) (top level, then in the Request Attributes Sequence): Code Value
     * (0008,0100) (or Long Code Value (0008,0119) / URN Code Value (0008,0120)), Coding Scheme
     * Designator (0008,0102), Code Meaning (0008,0104). All "" when there is none. */
    char procedure_code[257], procedure_scheme[65], procedure_meaning[257];
    char specific_character_set[129]; /* (0008,0005) as found (backslash-separated), or "" */
    char modality[17], body_part[17], view_position[17]; /* CS */
    unsigned warnings;      /* DCM_RF_* bits; 0 when every value was exact */
    char warning_text[256]; /* "patient_name: ..." for the audit: field and set names, no PHI */
};

/* Reads path's header into ret (see above; ret is zeroed first, and again on failure). Fails
 * with CXR_EINVAL (NULL path or ret), CXR_EIO (cannot open, stat or map; not a regular file),
 * CXR_ELIMIT (over DCM_MAX_FILE_BYTES), CXR_EPARSE (not DICOM; truncated or malformed header;
 * no SOP Class, SOP Instance, Study Instance UID or Modality), CXR_ENOMEM, CXR_EDICOM (data
 * dictionary missing, other DCMTK failure), with "PATH: problem" in errbuf. Character set
 * problems are not failures: see warnings. Thread-safe. The file must not be truncated by
 * someone else during the call (it is mapped: that would be SIGBUS). */
cxr_err dcm_read_report_fields(const char *path, struct dcm_report_fields *ret, char *errbuf,
                               size_t errlen);

/* ---- PNG and JPEG ------------------------------------------------------------------------ */

enum px_format { PX_FMT_UNKNOWN, PX_FMT_DICOM, PX_FMT_PNG, PX_FMT_JPEG };
/* Detects the format from the first bytes (never from a file name). */
enum px_format px_detect(const void *data, size_t len);
/* Decodes a PNG or JPEG into samples (grey or RGB; alpha dropped, palettes expanded). */
cxr_err px_image_read_png(const void *data, size_t len, const char *name, struct px_image *ret,
                          char *errbuf, size_t errlen);
cxr_err px_image_read_jpeg(const void *data, size_t len, const char *name, struct px_image *ret,
                           char *errbuf, size_t errlen);
/* Writes a size x size [0,1] image as an 8-bit grey PNG (atomically). */
cxr_err px_write_png(const char *path, const float *unit, int size, char *errbuf, size_t errlen);

/* PNG in memory (*ret_png is malloc'ed, the caller frees it). px_png_mem: a size x size [0,1]
 * image as 8-bit grey. px_heatmap_png: a Grad-CAM map (ch x cw values in [0,1], see
 * nn_gradcam_run) resized bilinearly to size x size and coloured (a perceptual colour map, low
 * = transparent/blue, high = red); with unit non-NULL it is blended over that grey image into
 * an RGB picture (the CLI's --heatmap), with unit NULL it is an RGBA overlay whose alpha grows
 * with the value (the web page stacks it over the image and toggles it). */
cxr_err px_png_mem(const float *unit, int size, unsigned char **ret_png, size_t *ret_len,
                   char *errbuf, size_t errlen);
cxr_err px_heatmap_png(const float *unit, int size, const float *cam, int ch, int cw,
                       unsigned char **ret_png, size_t *ret_len, char *errbuf, size_t errlen);

/* ---- the pipeline in parts ---------------------------------------------------------------- */

/* Samples (+ the DICOM header when info is not NULL) -> [0,1] image of img->width x height
 * (malloc'ed into *ret_unit), the VOI used into ret_pinfo (may be NULL). */
cxr_err px_to_unit(const struct px_image *img, const struct dcm_info *info, float **ret_unit,
                   struct px_info *ret_pinfo, char *errbuf, size_t errlen, const char *name);
/* Area-averaged resize of a w x h image to fit size x size keeping the aspect ratio, centred,
 * padding 0. out holds size*size floats. Fails only with CXR_ENOMEM. */
cxr_err px_resize_area(const float *in, int w, int h, int size, float *out, int *ret_ow,
                       int *ret_oh);
/* Like px_load_unit_mem(), also reporting what was done (ret_pinfo may be NULL). */
cxr_err px_load_unit_mem_ex(const void *data, size_t len, const char *name, int size, float *out,
                            struct px_verdict *ret_verdict, struct px_info *ret_pinfo,
                            char *errbuf, size_t errlen);
/* What px_load_unit_mem_trace saw: on_decoded (may be NULL) is called with the decoded samples
 * before preprocessing (the daemon hashes them for the audit); the times are filled in. */
struct px_trace {
    void (*on_decoded)(void *user, const struct px_image *img);
    void *user;
    double decode_ms;     /* parse + decode (+ the gate for DICOM) + on_decoded */
    double preprocess_ms; /* VOI, MONOCHROME1, resize */
};
/* px_load_unit_mem_ex() observed by trace (may be NULL): the one path, with its timings. */
cxr_err px_load_unit_mem_trace(const void *data, size_t len, const char *name, int size,
                               float *out, struct px_verdict *ret_verdict,
                               struct px_info *ret_pinfo, struct px_trace *trace, char *errbuf,
                               size_t errlen);
/* px_load_unit_mem_trace() for data that are the whole content of the file open on fd (see
 * dcm_file_open_fd(); fd < 0: the same as px_load_unit_mem_trace()). Same pixels, same result. */
cxr_err px_load_unit_fd_trace(const void *data, size_t len, int fd, const char *name, int size,
                              float *out, struct px_verdict *ret_verdict,
                              struct px_info *ret_pinfo, struct px_trace *trace, char *errbuf,
                              size_t errlen);
/* A whole input file (at most DCM_MAX_FILE_BYTES) mapped read-only: no copy of its bytes. For
 * files nobody truncates while they are mapped (the spool's: a truncated mapping faults). */
struct px_mapped {
    const void *data; /* len bytes (a static empty buffer when len is 0) */
    size_t len;
    int fd;
    void *map; /* the mapping (NULL for an empty file) */
};
/* Errors as px_read_file(). Release with px_unmap_file(). */
cxr_err px_map_file(const char *path, struct px_mapped *ret_map, char *errbuf, size_t errlen);
void px_unmap_file(struct px_mapped *m);
/* Reads a whole input file (at most DCM_MAX_FILE_BYTES) into a malloc'ed buffer. */
cxr_err px_read_file(const char *path, char **ret_data, size_t *ret_len, char *errbuf,
                     size_t errlen);

/* ---- the C-STORE listener (DCMTK's dcmnet, dicom/adapter/dcm_scp.cpp) ---------------------
 *
 * DESIGN. The caller creates the listening socket itself (bound to the configured address:
 * DCMTK 3.6.7 cannot bind to one) and hands it over; the listener accepts on it in its own thread
 * and runs a DcmThreadSCP per connection, one thread per association up to max_associations
 * (its own small pool: DCMTK 3.6.7's DcmSCPPool cannot use our socket, see dcm_scp.cpp). It
 * turns Nagle off on every
 * accepted connection itself. Each C-STORE is written bit-preserving, as it arrives, to
 * spool_dir/tmp/; then the file is fsynced, its header (up to the pixel data, never the pixels)
 * read for the UIDs, renamed to spool_dir/in/<SOP Instance UID>.<unique>.dcm and spool_dir/in
 * fsynced; only then is ops->stored called, and its status is the C-STORE response. Any failure
 * on the way removes the temporary file and answers a failure status: 0xA700 (out of resources)
 * when the disk is full or the object is over max_object_bytes, 0xC000 (cannot understand) when
 * the data set cannot be read, 0xA900 when the SOP class does not match the presentation
 * context. Callbacks run on association threads, concurrently: they must be thread-safe and
 * must not block for long. No PHI is passed to ops->event.
 * DICOM TLS: with tls_listen_fd the listener also accepts on a second socket where every
 * connection must be TLS (DCMTK's dcmtls, the profile and verification of cfg->tls). A plain
 * A-ASSOCIATE-RQ there (its first byte) is refused by closing, and a failed handshake (no or an
 * untrusted client certificate, no common suite) too; both are "association.refused" events
 * whose detail carries tls= and the reason. The handshake runs in the connection's own thread,
 * outside the lock that serialises the hand-over of the socket to DCMTK. */

typedef struct dcm_listener dcm_listener;

struct dcm_assoc { /* an association request as the admission callback sees it */
    uint64_t id;                       /* association number since start, for logs */
    char calling_aet[17], called_aet[17]; /* trimmed of DICOM padding */
    char peer[64];                     /* numeric address of the peer */
};

enum dcm_admit {
    DCM_ADMIT_OK = 0,
    DCM_ADMIT_REJECT_CALLING_AET, /* permanent, service user: calling AE title not recognised */
    DCM_ADMIT_REJECT_CALLED_AET,  /* permanent, service user: called AE title not recognised */
    DCM_ADMIT_REJECT_BUSY,        /* transient, service provider: local limit exceeded (disk
                                     under the watermark, queue too deep, stopping) */
};

struct dcm_stored { /* an instance that is durably in spool_dir/in */
    const struct dcm_assoc *assoc;
    char sop_class_uid[65], sop_instance_uid[65], study_uid[65], series_uid[65];
    char patient_id[65], accession[65];
    char transfer_syntax[65];
    char path[1024];       /* its final path under spool_dir/in */
    int64_t size_bytes;
    int64_t received_at_ms; /* Unix epoch ms when the file became durable */
    double receive_ms;      /* from the C-STORE request to the durable file */
    bool scored_class;      /* CR, DX (presentation or processing) or Secondary Capture */
};

struct dcm_listener_ops {
    void *user;
    /* Before the association is acknowledged: accept it or give the rejection and a reason (for
     * the log and the audit). DCM_ADMIT_OK accepts. */
    enum dcm_admit (*admit)(void *user, const struct dcm_assoc *a, char *reason, size_t len);
    /* After the file is durable, before the response: returns the DIMSE status to send (0x0000
     * Success). On a failure status the listener deletes the file. */
    uint16_t (*stored)(void *user, const struct dcm_stored *s);
    /* Association-level events for the audit: kind "association.refused",
     * "association.aborted", "association.timeout", "store.failed", "association.released";
     * detail is key=value text without PHI. */
    void (*event)(void *user, const struct dcm_assoc *a, const char *kind, const char *detail);
};

/* DICOM TLS (DCMTK's dcmtls over OpenSSL), for the listener and the SCU. All paths PEM. */
enum dcm_tls_profile {
    DCM_TLS_BCP195_ND = 0, /* Non-downgrading BCP 195: TLS 1.2+, the four AES-GCM (EC)DHE-RSA
                              suites (DICOM PS3.15 B.10); the default */
    DCM_TLS_BCP195,        /* BCP 195: prefers those, falls back to TLS 1.0 and the AES/Basic
                              profiles' suites */
    DCM_TLS_BCP195_EXT,    /* Extended BCP 195: TLS 1.2 only, adds the ECDSA GCM suites */
};
struct dcm_tls_config {
    char cert[1024];  /* our certificate ("" = none; the listener needs one) */
    char key[1024];   /* its private key (unencrypted) */
    char ca[1024];    /* CA certificates the peer's certificate is verified against ("" = none) */
    bool verify_peer; /* listener: a client certificate is required and verified against ca;
                         SCU: the server's certificate is verified against ca */
    enum dcm_tls_profile profile;
};
/* Loads cert, key and ca as the listener (server) or an SCU (server false) would, and checks that
 * the key matches the certificate: CXR_OK, or CXR_EINVAL with "tls_cert 'PATH': problem" (the
 * file and what is wrong with it) in errbuf. */
cxr_err dcm_tls_check(const struct dcm_tls_config *tls, bool server, char *errbuf,
                      size_t errlen);
/* "bcp195-nd", "bcp195", "bcp195-ext" <-> the enum; false for an unknown name. */
bool dcm_tls_profile_from_name(const char *name, enum dcm_tls_profile *ret);
const char *dcm_tls_profile_name(enum dcm_tls_profile p);

struct dcm_listener_config {
    int listen_fd;           /* plain DICOM: bound and listening (the listener does not close
                                it), or -1 for none (TLS only) */
    int tls_listen_fd;       /* DICOM over TLS: bound and listening, or 0 / -1 for none (a
                                zeroed config has no TLS socket) */
    struct dcm_tls_config tls; /* for tls_listen_fd: cert and key required; verify_peer needs ca */
    char ae_title[17];       /* called AE title we answer to */
    int max_associations;
    int max_pdu;             /* bytes, 4096..131072 */
    int acse_timeout, dimse_timeout, idle_timeout; /* seconds */
    size_t max_object_bytes;
    bool refuse_other_classes; /* other storage SOP classes: reject their contexts, else accept
                                  them (scored_class false) */
    char spool_dir[1024];    /* tmp/ and in/ are created 0700 under it */
};

/* Starts the listener thread. Errors: CXR_EINVAL (config), CXR_EIO (spool directories),
 * CXR_EDICOM (DCMTK's network could not start), with the reason in errbuf. */
cxr_err dcm_listener_start(const struct dcm_listener_config *cfg,
                           const struct dcm_listener_ops *ops, dcm_listener **ret,
                           char *errbuf, size_t errlen);
/* Running associations. */
int dcm_listener_active(const dcm_listener *l);
/* Stops accepting new associations, lets the running ones finish for up to timeout_ms, aborts
 * the rest, joins every thread and frees l. Safe with NULL. */
void dcm_listener_stop(dcm_listener *l, int timeout_ms);

/* ---- the SCU: C-ECHO and C-STORE to a peer (dicom/adapter/dcm_scu.cpp) --------------------
 *
 * One association per call, DCMTK's dcmnet (and dcmtls for TLS) underneath, every wait bounded by
 * timeout_s (TCP connect, association negotiation, each DIMSE exchange). A failure says which step
 * failed in ret->fail and ret->reason (and errbuf), so the CLI can name it: connection refused,
 * timeout, association rejected (with DICOM's result, source and reason), TLS handshake. */

enum dcm_scu_fail {
    DCM_SCU_OK = 0,
    DCM_SCU_CONNECT_REFUSED, /* nothing listens at host:port (ECONNREFUSED) */
    DCM_SCU_TIMEOUT,         /* connect, negotiation or a response took longer than timeout_s */
    DCM_SCU_NETWORK,         /* host unknown or unreachable, connection reset or closed */
    DCM_SCU_TLS,             /* TLS setup or handshake failed (certificate, profile) */
    DCM_SCU_REJECTED,        /* A-ASSOCIATE-RJ: reason holds result, source and reason */
    DCM_SCU_ABORTED,         /* A-ABORT from the peer */
    DCM_SCU_NO_CONTEXT,      /* the peer accepted no presentation context we proposed */
    DCM_SCU_STATUS,          /* the DIMSE response's status was not Success (ret->status) */
    DCM_SCU_FILE,            /* the file to send could not be read */
};
const char *dcm_scu_fail_name(enum dcm_scu_fail f); /* "connection refused", "timeout", ... */

struct dcm_scu_config {
    char host[256];
    int port;
    char calling_aet[17], called_aet[17];
    int timeout_s;             /* 1..3600 */
    bool use_tls;
    struct dcm_tls_config tls; /* with use_tls */
};

struct dcm_scu_result {
    enum dcm_scu_fail fail;
    char reason[256];  /* what failed, in words (no PHI) */
    double assoc_ms;   /* TCP connect + TLS + A-ASSOCIATE-RQ/AC */
    int n_ok;          /* echoes answered Success (dcm_scu_echo) */
    double rtt_min_ms, rtt_avg_ms, rtt_max_ms; /* C-ECHO round trips, or the C-STORE's */
    uint16_t status;   /* last DIMSE status received */
    char tls_cipher[64]; /* the negotiated TLS cipher suite, "" without TLS */
};

/* Opens an association proposing Verification, sends count (1..1000) C-ECHO-RQ one after the
 * other, releases it. CXR_OK only when every echo was answered Success; else CXR_EIO (network,
 * timeout, rejection, TLS: see ret->fail) or CXR_EINVAL (config). */
cxr_err dcm_scu_echo(const struct dcm_scu_config *cfg, int count, struct dcm_scu_result *ret,
                     char *errbuf, size_t errlen);

/* What dcm_scu_store changes in the data set before sending it ("" = keep). */
struct dcm_store_edit {
    char study_uid[65], series_uid[65], sop_instance_uid[65];
    char patient_id[65];
};
/* Reads the DICOM file at path, applies edit (may be NULL), and sends it by C-STORE on one
 * association proposing its SOP class with its own transfer syntax (and Explicit / Implicit VR
 * Little Endian), then releases. CXR_OK when the status was Success (0000) or a warning (Bxxx);
 * else as dcm_scu_echo, with ret->status holding a failure status. */
cxr_err dcm_scu_store(const struct dcm_scu_config *cfg, const char *path,
                      const struct dcm_store_edit *edit, struct dcm_scu_result *ret,
                      char *errbuf, size_t errlen);

/* A new UID "2.25.<decimal of 128 random bits>" (ITU-T X.667 UUID form; out holds 65). */
cxr_err dcm_new_uid(char out[65]);

/* Makes a TCP socket bound to address:port and listening (backlog 64, SO_REUSEADDR, close on
 * exec): the socket handed to dcm_listener_start. address is numeric IPv4 or IPv6. */
cxr_err dcm_listen_socket(const char *address, int port, int *ret_fd, char *errbuf,
                          size_t errlen);

/* DCMTK's name of a UID ("CT Image Storage", "JPEG Baseline", ...), or NULL when unknown. The
 * string is static. */
const char *dcm_uid_name(const char *uid);

/* The spool name rule: true when name (a file in spool_dir/in) was written by the listener. */
bool dcm_spool_name_ok(const char *name);

#ifdef __cplusplus
}
#endif
#endif
