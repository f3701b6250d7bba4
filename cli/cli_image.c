/*
 * cli_image.c - `cxrtriage inspect FILE...` and `cxrtriage preprocess FILE -o out.png`: what the
 * DICOM module sees in a file and what the model would be given.
 *
 * inspect prints, per file, the attributes the pipeline reads, the transfer syntax, the
 * applicability verdict with its reason, and whether the pixels decode (it runs the whole pixel
 * path, so a file that inspects clean is a file the daemon can score). preprocess writes the
 * model's input as an 8-bit PNG a person can look at, and optionally the decoded samples.
 * Exit status: 0 when every file was read, 1 when any file failed, 2 on usage errors.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "common.h"
#include "dicom.h"

#define CLI_DEFAULT_SIZE 224

static const char *voi_name(enum px_voi_kind k)
{
    switch (k) {
    case PX_VOI_WINDOW: return "window";
    case PX_VOI_LUT: return "voi-lut";
    case PX_VOI_PERCENTILE: return "percentile";
    case PX_VOI_NONE: break;
    }
    return "none";
}

static const char *or_dash(const char *s)
{
    return s && s[0] ? s : "-";
}

static void print_dicom_header(const struct dcm_info *in)
{
    printf("  Transfer Syntax         %s (%s)\n", or_dash(in->transfer_syntax),
           in->transfer_syntax_name);
    printf("  SOP Class UID           %s\n", or_dash(in->sop_class_uid));
    printf("  SOP Instance UID        %s\n", or_dash(in->sop_instance_uid));
    printf("  Study Instance UID      %s\n", or_dash(in->study_uid));
    printf("  Series Instance UID     %s\n", or_dash(in->series_uid));
    printf("  Patient ID              %s\n", or_dash(in->patient_id));
    printf("  Patient Name            %s\n", or_dash(in->patient_name));
    printf("  Accession Number        %s\n", or_dash(in->accession));
    printf("  Study Date / Time       %s %s\n", or_dash(in->study_date), or_dash(in->study_time));
    printf("  Modality                %s\n", or_dash(in->modality));
    printf("  Body Part Examined      %s\n", or_dash(in->body_part));
    printf("  View Position           %s\n", or_dash(in->view_position));
    printf("  Photometric             %s\n", or_dash(in->photometric));
    printf("  Rows x Columns          %d x %d\n", in->rows, in->columns);
    printf("  Bits Allocated/Stored   %d / %d (high bit %d, %s)\n", in->bits_allocated,
           in->bits_stored, in->high_bit, in->pixel_representation ? "signed" : "unsigned");
    printf("  Samples per Pixel       %d\n", in->samples_per_pixel);
    printf("  Number of Frames        %d\n", in->number_of_frames);
    if (in->has_rescale)
        printf("  Rescale Slope/Intercept %g / %g\n", in->rescale_slope, in->rescale_intercept);
    else
        printf("  Rescale Slope/Intercept -\n");
    if (in->n_windows > 0)
        printf("  Window Center/Width     %g / %g (%d in the header)\n", in->window_center,
               in->window_width, in->n_windows);
    else
        printf("  Window Center/Width     -\n");
    if (in->has_voi_lut)
        printf("  VOI LUT Sequence        %d entries from %d, %d bits\n", in->voi_lut_entries,
               in->voi_lut_first, in->voi_lut_bits);
    else
        printf("  VOI LUT Sequence        -\n");
    printf("  Presentation LUT Shape  %s\n", or_dash(in->presentation_lut_shape));
    if (in->has_pixel_spacing)
        printf("  Pixel Spacing           %g \\ %g mm\n", in->pixel_spacing[0],
               in->pixel_spacing[1]);
    else
        printf("  Pixel Spacing           -\n");
}

static int inspect_one(const char *path)
{
    char err[512];
    char *data = NULL;
    size_t len = 0;
    dcm_file *df = NULL;
    struct px_verdict v;
    struct px_info pi;
    float *unit = NULL;
    int rc = 1;
    enum px_format fmt;

    printf("%s\n", path);
    if (px_read_file(path, &data, &len, err, sizeof(err)))
        goto out_err;
    fmt = px_detect(data, len);
    printf("  Format                  %s\n", fmt == PX_FMT_DICOM  ? "DICOM"
                                             : fmt == PX_FMT_PNG  ? "PNG"
                                             : fmt == PX_FMT_JPEG ? "JPEG"
                                                                  : "unknown");
    if (fmt == PX_FMT_DICOM) {
        if (dcm_file_open_mem(data, len, path, &df, err, sizeof(err)))
            goto out_err;
        print_dicom_header(dcm_file_info(df));
    }
    unit = malloc(sizeof(float) * CLI_DEFAULT_SIZE * CLI_DEFAULT_SIZE);
    if (!unit) {
        (void)snprintf(err, sizeof(err), "%s: out of memory", path);
        goto out_err;
    }
    if (px_load_unit_mem_ex(data, len, path, CLI_DEFAULT_SIZE, unit, &v, &pi, err, sizeof(err))) {
        /* The header may still earn a verdict when the pixels are the problem. */
        if (df) {
            dcm_gate(dcm_file_info(df), &v);
            printf("  Verdict                 %s%s\n",
                   v.applicable ? "not scored: the header passes the gate but the pixel data "
                                  "cannot be decoded (see Error)"
                                : "not applicable: ",
                   v.reason);
        }
        goto out_err;
    }
    printf("  Pixels                  decoded %dx%d, VOI %s", pi.width, pi.height,
           voi_name(pi.voi));
    if (pi.voi == PX_VOI_WINDOW || pi.voi == PX_VOI_PERCENTILE)
        printf(" (center %g, width %g)", pi.window_center, pi.window_width);
    printf("%s\n", pi.inverted ? ", inverted (MONOCHROME1)" : "");
    printf("  Verdict                 %s%s\n", v.applicable ? "applicable" : "not applicable: ",
           v.reason);
    rc = 0;
    goto out_free;
out_err:
    printf("  Error                   %s\n", err);
    fprintf(stderr, "cxrtriage inspect: %s\n", err);
out_free:
    free(unit);
    dcm_file_free(df);
    free(data);
    return rc;
}

static void inspect_usage(FILE *out)
{
    fprintf(out, "Usage: cxrtriage inspect FILE...\n"
                 "Prints each DICOM, PNG or JPEG file's attributes, transfer syntax, whether its\n"
                 "pixels decode, and the applicability verdict with its reason.\n"
                 "Exit status: 0 all files read, 1 some file failed, 2 usage.\n%s\n",
            CXR_DISCLAIMER);
}

int cli_inspect(int argc, char **argv)
{
    int rc = 0;

    if (argc < 2) {
        inspect_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        inspect_usage(stdout);
        return 0;
    }
    (void)dcm_global_init();
    for (int i = 1; i < argc; i++) {
        if (i > 1)
            printf("\n");
        if (inspect_one(argv[i]))
            rc = 1;
    }
    return rc;
}

/* Writes frame 0's decoded samples (before any LUT) as raw little-endian int32, row-major,
 * channels interleaved. */
static int write_samples(const char *in_path, const char *out_path)
{
    char err[512];
    char *data = NULL;
    size_t len = 0;
    dcm_file *df = NULL;
    struct px_image img = {0};
    int rc = 1;
    cxr_err e;

    if (px_read_file(in_path, &data, &len, err, sizeof(err)))
        goto out_err;
    switch (px_detect(data, len)) {
    case PX_FMT_DICOM:
        e = dcm_file_open_mem(data, len, in_path, &df, err, sizeof(err));
        if (!e)
            e = dcm_file_decode(df, &img, err, sizeof(err));
        break;
    case PX_FMT_PNG: e = px_image_read_png(data, len, in_path, &img, err, sizeof(err)); break;
    case PX_FMT_JPEG: e = px_image_read_jpeg(data, len, in_path, &img, err, sizeof(err)); break;
    case PX_FMT_UNKNOWN:
    default:
        (void)snprintf(err, sizeof(err), "%s: not a DICOM, PNG or JPEG file", in_path);
        e = CXR_EPARSE;
        break;
    }
    if (e)
        goto out_err;
    e = cxr_file_write_atomic(out_path, img.samples,
                              (size_t)img.width * (size_t)img.height * (size_t)img.channels *
                                  sizeof(int32_t),
                              0644);
    if (e) {
        (void)snprintf(err, sizeof(err), "%s: cannot write: %s", out_path, cxr_strerror(e));
        goto out_err;
    }
    printf("samples=%s width=%d height=%d channels=%d bits=%d signed=%d\n", out_path, img.width,
           img.height, img.channels, img.bits, img.is_signed ? 1 : 0);
    rc = 0;
    goto out_free;
out_err:
    fprintf(stderr, "cxrtriage preprocess: %s\n", err);
out_free:
    px_image_done(&img);
    dcm_file_free(df);
    free(data);
    return rc;
}

static void preprocess_usage(FILE *out)
{
    fprintf(out,
            "Usage: cxrtriage preprocess FILE -o OUT.png [--size N] [--samples OUT.raw]\n"
            "Writes the model's input for a DICOM, PNG or JPEG file as an 8-bit grey PNG\n"
            "(Modality LUT, VOI, MONOCHROME1 inverted, area-averaged resize to N x N keeping\n"
            "the aspect ratio; default N %d) and prints what was done as key=value pairs.\n"
            "  -o, --output PATH    the PNG to write\n"
            "  -s, --size N         the model's input side (1..%d)\n"
            "      --samples PATH   also write the decoded samples of frame 0, before any LUT,\n"
            "                       as raw little-endian int32 (row-major, channels interleaved)\n"
            "%s\n",
            CLI_DEFAULT_SIZE, PX_MAX_SIZE, CXR_DISCLAIMER);
}

int cli_preprocess(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'}, {"size", required_argument, NULL, 's'},
        {"samples", required_argument, NULL, 'S'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *out = NULL, *samples = NULL, *in;
    int size = CLI_DEFAULT_SIZE, c, rc = 1;
    char err[512];
    float *unit = NULL;
    struct px_verdict v;
    struct px_info pi;
    char *data = NULL;
    size_t len = 0;

    optind = 1;
    while ((c = getopt_long(argc, argv, "o:s:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'S': samples = optarg; break;
        case 's': {
            char *end = NULL;
            long n = strtol(optarg, &end, 10);
            if (!end || *end || n < 1 || n > PX_MAX_SIZE) {
                fprintf(stderr, "cxrtriage preprocess: --size: found '%s', wanted 1..%d\n",
                        optarg, PX_MAX_SIZE);
                return 2;
            }
            size = (int)n;
            break;
        }
        case 'h': preprocess_usage(stdout); return 0;
        default: preprocess_usage(stderr); return 2;
        }
    }
    if (optind != argc - 1 || !out) {
        preprocess_usage(stderr);
        return 2;
    }
    in = argv[optind];
    (void)dcm_global_init();
    unit = malloc(sizeof(float) * (size_t)size * (size_t)size);
    if (!unit) {
        fprintf(stderr, "cxrtriage preprocess: out of memory\n");
        return 1;
    }
    if (px_read_file(in, &data, &len, err, sizeof(err)) ||
        px_load_unit_mem_ex(data, len, in, size, unit, &v, &pi, err, sizeof(err)) ||
        px_write_png(out, unit, size, err, sizeof(err))) {
        fprintf(stderr, "cxrtriage preprocess: %s\n", err);
        goto out_free;
    }
    printf("file=%s format=%s width=%d height=%d size=%d out_width=%d out_height=%d voi=%s "
           "center=%.17g width_voi=%.17g inverted=%d applicable=%d output=%s\n",
           in, pi.kind, pi.width, pi.height, size, pi.out_width, pi.out_height, voi_name(pi.voi),
           pi.window_center, pi.window_width, pi.inverted ? 1 : 0, v.applicable ? 1 : 0, out);
    if (!v.applicable)
        printf("note: not applicable for scoring: %s\n", v.reason);
    rc = samples ? write_samples(in, samples) : 0;
out_free:
    free(data);
    free(unit);
    return rc;
}
