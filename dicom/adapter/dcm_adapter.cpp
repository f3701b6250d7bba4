/*
 * dcm_adapter.cpp - the only C++ in cxrtriage: a thin fence over DCMTK 3.6.7 (dataset parsing,
 * JPEG / JPEG-LS / RLE decoding) with OpenJPEG for JPEG 2000, behind the C API of dicom.h.
 *
 * Design. Every exported function catches every exception (std::bad_alloc -> CXR_ENOMEM,
 * anything else -> CXR_EDICOM) so no C++ exception crosses into C, and OFCondition is turned into
 * cxr_err + text in dcm_cond_err() only. The codecs are registered and the data dictionary
 * loaded once under pthread_once; after that DCMTK's codec list is read-locked per use, so
 * several threads may decode different files at once. Untrusted sizes are checked before any
 * allocation: the file size by the caller, Rows x Columns x Samples x Frames x bytes against
 * DCM_MAX_DECODED_BYTES before decoding, the pixel data length against that size, and the JPEG
 * 2000 header's size against Rows/Columns before OpenJPEG decodes. DCMTK's own logger is
 * switched off: library code does not log, errors come back as text.
 */
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include <dcmtk/config/osconfig.h>

#include <dcmtk/dcmdata/dcdict.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dcistrmf.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <dcmtk/oflog/oflog.h>

#include <charls/charls.h>
#include <openjpeg.h>
#include <zlib.h>

extern "C" {
#include "dicom.h"
#include "dicom_int.h"
}

struct dcm_file {
    ~dcm_file()
    {
        if (fd >= 0)
            (void)close(fd);
    }
    int fd = -1; /* the file (spool file or memfd) DCMTK loads large values from, lazily */
    DcmFileFormat ff;
    struct dcm_info info;
    std::vector<uint16_t> voi_lut;
    std::string name;
    std::string xfer_uid;
};

namespace {

pthread_once_t g_once = PTHREAD_ONCE_INIT;
bool g_dict_ok = false;

void global_init_once()
{
    OFLog::configure(OFLogger::OFF_LOG_LEVEL);
    DcmRLEDecoderRegistration::registerCodecs();
    /* YCbCr JPEG comes out as RGB, with the Photometric Interpretation updated to match. */
    DJDecoderRegistration::registerCodecs(EDC_photometricInterpretation);
    DJLSDecoderRegistration::registerCodecs();
    g_dict_ok = dcmDataDict.isDictionaryLoaded();
}

/* The one place where OFCondition becomes cxr_err. */
cxr_err dcm_cond_err(const OFCondition &c, char *errbuf, size_t errlen, const char *name,
                     const char *what)
{
    cxr_err err = CXR_EDICOM;

    if (c == EC_MemoryExhausted)
        err = CXR_ENOMEM;
    else if (c == EC_StreamNotifyClient || c == EC_EndOfStream || c == EC_InvalidStream ||
             c == EC_ItemEnd || c == EC_SequEnd || c == EC_CorruptedData ||
             c == EC_ElemLengthLargerThanItem || c == EC_InvalidTag ||
             c == EC_UnknownVR || c == EC_FileMetaInfoHeaderMissing)
        err = CXR_EPARSE;
    else if (c == EC_CannotChangeRepresentation || c == EC_UnsupportedEncoding)
        err = CXR_EUNSUPPORTED;
    return px_err(errbuf, errlen, err, "%s: %s: %s", name, what, c.text());
}

void copy_str(char *dst, size_t dstlen, const OFString &s)
{
    /* DICOM pads with spaces (and UIDs with NUL); drop both ends' padding. */
    size_t a = 0, b = s.size();
    while (a < b && (s[a] == ' ' || s[a] == '\0'))
        a++;
    while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\0'))
        b--;
    size_t n = b - a < dstlen - 1 ? b - a : dstlen - 1;
    std::memcpy(dst, s.data() + a, n);
    dst[n] = '\0';
}

void get_str(DcmItem *it, const DcmTagKey &tag, char *dst, size_t dstlen, bool all = false)
{
    OFString s;
    dst[0] = '\0';
    OFCondition c = all ? it->findAndGetOFStringArray(tag, s) : it->findAndGetOFString(tag, s);
    if (c.good())
        copy_str(dst, dstlen, s);
}

int get_int(DcmItem *it, const DcmTagKey &tag, int dflt)
{
    Uint16 u;
    Sint32 s;
    if (it->findAndGetUint16(tag, u).good())
        return u;
    if (it->findAndGetSint32(tag, s).good())
        return s;
    OFString str;
    if (it->findAndGetOFString(tag, str).good()) {
        char *end = nullptr;
        long v = std::strtol(str.c_str(), &end, 10);
        if (end != str.c_str() && v >= 0 && v < 1000000000L)
            return static_cast<int>(v);
    }
    return dflt;
}

bool get_f64(DcmItem *it, const DcmTagKey &tag, unsigned long pos, double *ret)
{
    Float64 v;
    if (it->findAndGetFloat64(tag, v, pos).good()) {
        *ret = v;
        return true;
    }
    return false;
}

void read_info(dcm_file *f)
{
    DcmDataset *ds = f->ff.getDataset();
    DcmMetaInfo *meta = f->ff.getMetaInfo();
    struct dcm_info *in = &f->info;

    *in = dcm_info{};
    in->has_meta = meta && meta->card() > 0;
    get_str(ds, DCM_SOPClassUID, in->sop_class_uid, sizeof(in->sop_class_uid));
    get_str(ds, DCM_SOPInstanceUID, in->sop_instance_uid, sizeof(in->sop_instance_uid));
    get_str(ds, DCM_StudyInstanceUID, in->study_uid, sizeof(in->study_uid));
    get_str(ds, DCM_SeriesInstanceUID, in->series_uid, sizeof(in->series_uid));
    get_str(ds, DCM_PatientID, in->patient_id, sizeof(in->patient_id));
    get_str(ds, DCM_PatientName, in->patient_name, sizeof(in->patient_name), true);
    get_str(ds, DCM_AccessionNumber, in->accession, sizeof(in->accession));
    get_str(ds, DCM_StudyDate, in->study_date, sizeof(in->study_date));
    get_str(ds, DCM_StudyTime, in->study_time, sizeof(in->study_time));
    get_str(ds, DCM_Modality, in->modality, sizeof(in->modality));
    get_str(ds, DCM_BodyPartExamined, in->body_part, sizeof(in->body_part));
    get_str(ds, DCM_ViewPosition, in->view_position, sizeof(in->view_position));
    get_str(ds, DCM_PhotometricInterpretation, in->photometric, sizeof(in->photometric));
    get_str(ds, DCM_PresentationLUTShape, in->presentation_lut_shape,
            sizeof(in->presentation_lut_shape));
    if (!in->sop_class_uid[0] && meta)
        get_str(meta, DCM_MediaStorageSOPClassUID, in->sop_class_uid, sizeof(in->sop_class_uid));

    f->xfer_uid.clear();
    if (meta) {
        char uid[65];
        get_str(meta, DCM_TransferSyntaxUID, uid, sizeof(uid));
        f->xfer_uid = uid;
    }
    DcmXfer orig(ds->getOriginalXfer());
    if (f->xfer_uid.empty() && orig.getXfer() != EXS_Unknown)
        f->xfer_uid = orig.getXferID();
    copy_str(in->transfer_syntax, sizeof(in->transfer_syntax), OFString(f->xfer_uid.c_str()));
    const char *xname = nullptr;
    DcmXfer known(f->xfer_uid.c_str());
    if (known.getXfer() != EXS_Unknown)
        xname = known.getXferName();
    if (!xname && f->xfer_uid == "1.2.840.10008.1.2.8.1")
        xname = "Deflated Image Frame Compression";
    if (!xname && f->xfer_uid == "1.2.840.10008.1.2.4.201")
        xname = "High-Throughput JPEG 2000 Image Compression (Lossless Only)";
    if (!xname && f->xfer_uid == "1.2.840.10008.1.2.4.202")
        xname = "High-Throughput JPEG 2000 with RPCL Options Image Compression (Lossless Only)";
    if (!xname && f->xfer_uid == "1.2.840.10008.1.2.4.203")
        xname = "High-Throughput JPEG 2000 Image Compression";
    std::snprintf(in->transfer_syntax_name, sizeof(in->transfer_syntax_name), "%s",
                  xname ? xname : (f->xfer_uid.empty() ? "none given" : "unknown"));

    in->rows = get_int(ds, DCM_Rows, 0);
    in->columns = get_int(ds, DCM_Columns, 0);
    in->bits_allocated = get_int(ds, DCM_BitsAllocated, 0);
    in->bits_stored = get_int(ds, DCM_BitsStored, in->bits_allocated);
    in->high_bit = get_int(ds, DCM_HighBit, in->bits_stored - 1);
    in->pixel_representation = get_int(ds, DCM_PixelRepresentation, 0);
    in->samples_per_pixel = get_int(ds, DCM_SamplesPerPixel, 1);
    in->planar_configuration = get_int(ds, DCM_PlanarConfiguration, 0);
    in->number_of_frames = get_int(ds, DCM_NumberOfFrames, 1);
    if (in->number_of_frames < 1)
        in->number_of_frames = 1;

    double v;
    if (get_f64(ds, DCM_RescaleSlope, 0, &v)) {
        in->has_rescale = true;
        in->rescale_slope = v;
        if (!get_f64(ds, DCM_RescaleIntercept, 0, &in->rescale_intercept))
            in->rescale_intercept = 0.0;
    } else if (get_f64(ds, DCM_RescaleIntercept, 0, &v)) {
        in->has_rescale = true;
        in->rescale_slope = 1.0;
        in->rescale_intercept = v;
    }
    if (get_f64(ds, DCM_WindowCenter, 0, &in->window_center) &&
        get_f64(ds, DCM_WindowWidth, 0, &in->window_width)) {
        DcmElement *e = nullptr;
        in->n_windows = 1;
        if (ds->findAndGetElement(DCM_WindowCenter, e).good() && e)
            in->n_windows = static_cast<int>(e->getVM());
    }

    DcmItem *lut = nullptr;
    if (ds->findAndGetSequenceItem(DCM_VOILUTSequence, lut, 0).good() && lut) {
        Uint16 d0 = 0, d2 = 0;
        Sint16 first = 0;
        Uint16 ufirst = 0;
        const Uint16 *data = nullptr;
        unsigned long count = 0;
        if (lut->findAndGetUint16(DCM_LUTDescriptor, d0, 0).good() &&
            lut->findAndGetUint16(DCM_LUTDescriptor, d2, 2).good() &&
            lut->findAndGetUint16Array(DCM_LUTData, data, &count).good() && data) {
            unsigned long n = d0 == 0 ? 65536UL : d0;
            int mapped;
            if (lut->findAndGetUint16(DCM_LUTDescriptor, ufirst, 1).good())
                mapped = in->pixel_representation ? static_cast<Sint16>(ufirst) : ufirst;
            else if (lut->findAndGetSint16(DCM_LUTDescriptor, first, 1).good())
                mapped = first;
            else
                mapped = 0;
            if (count >= n) {
                f->voi_lut.assign(data, data + n);
                in->has_voi_lut = true;
                in->voi_lut_entries = static_cast<int>(n);
                in->voi_lut_first = mapped;
                in->voi_lut_bits = d2;
                in->voi_lut_data = f->voi_lut.data();
            }
        }
    }
    if (get_f64(ds, DCM_PixelSpacing, 0, &in->pixel_spacing[0]) &&
        get_f64(ds, DCM_PixelSpacing, 1, &in->pixel_spacing[1]))
        in->has_pixel_spacing = true;
    in->has_pixel_data = ds->tagExists(DCM_PixelData);
}

bool is_j2k(const std::string &uid)
{
    return uid == UID_JPEG2000LosslessOnlyTransferSyntax || uid == UID_JPEG2000TransferSyntax ||
           uid == UID_JPEG2000Part2MulticomponentImageCompressionLosslessOnlyTransferSyntax ||
           uid == UID_JPEG2000Part2MulticomponentImageCompressionTransferSyntax ||
           uid == "1.2.840.10008.1.2.4.201" || uid == "1.2.840.10008.1.2.4.202" ||
           uid == "1.2.840.10008.1.2.4.203";
}

/* ---- OpenJPEG from memory ---- */

struct opj_mem {
    const OPJ_BYTE *data;
    OPJ_SIZE_T len, pos;
};

OPJ_SIZE_T opj_mem_read(void *buf, OPJ_SIZE_T n, void *user)
{
    opj_mem *m = static_cast<opj_mem *>(user);
    if (m->pos >= m->len)
        return static_cast<OPJ_SIZE_T>(-1);
    OPJ_SIZE_T k = n < m->len - m->pos ? n : m->len - m->pos;
    std::memcpy(buf, m->data + m->pos, k);
    m->pos += k;
    return k;
}

OPJ_OFF_T opj_mem_skip(OPJ_OFF_T n, void *user)
{
    opj_mem *m = static_cast<opj_mem *>(user);
    if (n < 0) {
        if (static_cast<OPJ_SIZE_T>(-n) > m->pos)
            return -1;
        m->pos -= static_cast<OPJ_SIZE_T>(-n);
        return n;
    }
    OPJ_SIZE_T k = static_cast<OPJ_SIZE_T>(n);
    if (k > m->len - m->pos)
        k = m->len - m->pos;
    m->pos += k;
    return static_cast<OPJ_OFF_T>(k);
}

OPJ_BOOL opj_mem_seek(OPJ_OFF_T n, void *user)
{
    opj_mem *m = static_cast<opj_mem *>(user);
    if (n < 0 || static_cast<OPJ_SIZE_T>(n) > m->len)
        return OPJ_FALSE;
    m->pos = static_cast<OPJ_SIZE_T>(n);
    return OPJ_TRUE;
}

void opj_on_error(const char *msg, void *user)
{
    std::string *s = static_cast<std::string *>(user);
    if (s->empty()) {
        *s = msg;
        while (!s->empty() && (s->back() == '\n' || s->back() == '\r'))
            s->pop_back();
    }
}

void opj_on_quiet(const char *, void *) {}

/* Decodes one J2K codestream (or JP2 file) into img, checking its size against the header. */
cxr_err decode_j2k(const dcm_file *f, const std::vector<OPJ_BYTE> &cs, struct px_image *img,
                   char *errbuf, size_t errlen)
{
    const char *name = f->name.c_str();
    const struct dcm_info *in = &f->info;
    opj_mem mem = {cs.data(), cs.size(), 0};
    std::string msg;
    opj_image_t *image = nullptr;
    cxr_err err = CXR_OK;
    bool jp2 = cs.size() >= 12 && cs[4] == 'j' && cs[5] == 'P' && cs[6] == ' ' && cs[7] == ' ';

    opj_codec_t *codec = opj_create_decompress(jp2 ? OPJ_CODEC_JP2 : OPJ_CODEC_J2K);
    opj_stream_t *st = opj_stream_create(65536, OPJ_TRUE);
    if (!codec || !st) {
        err = px_err(errbuf, errlen, CXR_ENOMEM, "%s: out of memory", name);
        goto out_free;
    }
    opj_stream_set_user_data(st, &mem, nullptr);
    opj_stream_set_user_data_length(st, cs.size());
    opj_stream_set_read_function(st, opj_mem_read);
    opj_stream_set_skip_function(st, opj_mem_skip);
    opj_stream_set_seek_function(st, opj_mem_seek);
    opj_set_error_handler(codec, opj_on_error, &msg);
    opj_set_warning_handler(codec, opj_on_quiet, nullptr);
    opj_set_info_handler(codec, opj_on_quiet, nullptr);
    {
        opj_dparameters_t par;
        opj_set_default_decoder_parameters(&par);
        if (!opj_setup_decoder(codec, &par) || !opj_decoder_set_strict_mode(codec, OPJ_TRUE)) {
            err = px_err(errbuf, errlen, CXR_EDICOM, "%s: cannot set up the JPEG 2000 decoder",
                         name);
            goto out_free;
        }
    }
    if (!opj_read_header(st, codec, &image) || !image) {
        err = px_err(errbuf, errlen, CXR_EDICOM, "%s: bad JPEG 2000 header: %s", name,
                     msg.empty() ? "unreadable" : msg.c_str());
        goto out_free;
    }
    if (image->x1 - image->x0 != static_cast<OPJ_UINT32>(in->columns) ||
        image->y1 - image->y0 != static_cast<OPJ_UINT32>(in->rows) ||
        image->numcomps < static_cast<OPJ_UINT32>(in->samples_per_pixel)) {
        err = px_err(errbuf, errlen, CXR_EDICOM,
                     "%s: JPEG 2000 stream is %ux%u with %u components, the header says %dx%d "
                     "with %d",
                     name, image->x1 - image->x0, image->y1 - image->y0, image->numcomps,
                     in->columns, in->rows, in->samples_per_pixel);
        goto out_free;
    }
    if (!opj_decode(codec, st, image) || !opj_end_decompress(codec, st)) {
        err = px_err(errbuf, errlen, CXR_EDICOM, "%s: corrupt JPEG 2000 pixel data: %s", name,
                     msg.empty() ? "decoding failed" : msg.c_str());
        goto out_free;
    }
    {
        int ch = in->samples_per_pixel == 3 ? 3 : 1;
        for (int c = 0; c < ch; c++) {
            const opj_image_comp_t *cp = &image->comps[c];
            if (!cp->data || cp->w != static_cast<OPJ_UINT32>(in->columns) ||
                cp->h != static_cast<OPJ_UINT32>(in->rows) || cp->dx != 1 || cp->dy != 1) {
                err = px_err(errbuf, errlen, CXR_EUNSUPPORTED,
                             "%s: JPEG 2000 component %d is subsampled or sized differently",
                             name, c);
                goto out_free;
            }
        }
        err = px_image_alloc(img, in->columns, in->rows, ch, name, errbuf, errlen);
        if (err)
            goto out_free;
        size_t n = static_cast<size_t>(in->columns) * static_cast<size_t>(in->rows);
        for (int c = 0; c < ch; c++) {
            const OPJ_INT32 *src = image->comps[c].data;
            for (size_t i = 0; i < n; i++)
                img->samples[i * ch + c] = src[i];
        }
        img->bits = static_cast<int>(image->comps[0].prec);
        img->is_signed = image->comps[0].sgnd != 0;
    }
out_free:
    if (image)
        opj_image_destroy(image);
    if (st)
        opj_stream_destroy(st);
    if (codec)
        opj_destroy_codec(codec);
    return err;
}

/* The encapsulated pixel sequence of the file (its fragments); `what` names the encoding in
 * the message when the pixel data is not encapsulated. */
cxr_err pixel_sequence(dcm_file *f, const char *what, DcmPixelSequence *&seq, char *errbuf,
                       size_t errlen)
{
    const char *name = f->name.c_str();
    DcmDataset *ds = f->ff.getDataset();
    DcmElement *el = nullptr;

    seq = nullptr;
    if (ds->findAndGetElement(DCM_PixelData, el).bad() || !el)
        return px_err(errbuf, errlen, CXR_EDICOM, "%s: no pixel data", name);
    DcmPixelData *pd = dynamic_cast<DcmPixelData *>(el);
    if (!pd)
        return px_err(errbuf, errlen, CXR_EDICOM, "%s: pixel data has an unexpected type", name);
    OFCondition c = pd->getEncapsulatedRepresentation(ds->getOriginalXfer(), nullptr, seq);
    if (c.bad() || !seq)
        return px_err(errbuf, errlen, CXR_EDICOM,
                      "%s: %s pixel data is not encapsulated (%s)", name, what, c.text());
    return CXR_OK;
}

/* Collects the compressed fragments of frame 0 from the encapsulated pixel data (a JPEG 2000 or
 * JPEG-LS codestream; both end with FFD9). */
cxr_err codestream_frame0(dcm_file *f, const char *what, std::vector<Uint8> &cs, char *errbuf,
                          size_t errlen)
{
    const char *name = f->name.c_str();
    DcmPixelSequence *seq = nullptr;
    cxr_err perr = pixel_sequence(f, what, seq, errbuf, errlen);

    if (perr)
        return perr;
    unsigned long nitems = seq->card();
    if (nitems < 2)
        return px_err(errbuf, errlen, CXR_EDICOM, "%s: %s pixel data has no fragments", name,
                      what);
    int frames = f->info.number_of_frames;
    for (unsigned long i = 1; i < nitems; i++) {
        DcmPixelItem *item = nullptr;
        Uint8 *p = nullptr;
        if (seq->getItem(item, i).bad() || !item)
            return px_err(errbuf, errlen, CXR_EDICOM, "%s: unreadable fragment %lu", name, i);
        Uint32 len = item->getLength();
        if (len == 0)
            continue;
        if (item->getUint8Array(p).bad() || !p)
            return px_err(errbuf, errlen, CXR_EDICOM, "%s: unreadable fragment %lu", name, i);
        if (cs.size() + len > DCM_MAX_DECODED_BYTES)
            return px_err(errbuf, errlen, CXR_ELIMIT, "%s: compressed frame too large", name);
        cs.insert(cs.end(), p, p + len);
        /* Several frames: stop at the end of the first codestream (EOC marker). */
        if (frames > 1 && cs.size() >= 2) {
            size_t k = cs.size();
            while (k > 2 && cs[k - 1] == 0)
                k--;
            if (cs[k - 2] == 0xff && cs[k - 1] == 0xd9)
                break;
        }
    }
    if (cs.empty())
        return px_err(errbuf, errlen, CXR_EDICOM, "%s: %s pixel data is empty", name, what);
    return CXR_OK;
}

/* Bytes of one native frame: Rows x Columns x Samples x Bits Allocated, 1-bit samples packed. */
size_t frame_bytes(const struct dcm_info *in)
{
    size_t nsamp = static_cast<size_t>(in->rows) * static_cast<size_t>(in->columns) *
                   static_cast<size_t>(in->samples_per_pixel);
    return in->bits_allocated == 1 ? (nsamp + 7) / 8
                                   : nsamp * static_cast<size_t>(in->bits_allocated / 8);
}

cxr_err unpack_frame(dcm_file *f, const Uint8 *raw, const char *photometric, int planar,
                     struct px_image *img, char *errbuf, size_t errlen);

/* Deflated Image Frame Compression (1.2.840.10008.1.2.8.1, PS3.5 A.4.11): each frame is a raw
 * deflate stream (RFC 1951, no zlib header) of the frame's native little-endian bytes, 1-bit
 * samples packed least significant bit first. Frame 0 is inflated from the fragments in order
 * until its stream ends; it must inflate to exactly frame_bytes() (one pad byte allowed). */
cxr_err inflate_frame0(dcm_file *f, std::vector<Uint8> &out, char *errbuf, size_t errlen)
{
    const char *name = f->name.c_str();
    DcmPixelSequence *seq = nullptr;
    size_t need = frame_bytes(&f->info);
    cxr_err perr = pixel_sequence(f, "deflated", seq, errbuf, errlen);

    if (perr)
        return perr;
    unsigned long nitems = seq->card();
    if (nitems < 2)
        return px_err(errbuf, errlen, CXR_EDICOM, "%s: deflated pixel data has no fragments",
                      name);
    /* need + 2: room for one pad byte and one more to detect a frame that is too long */
    out.assign(need + 2, 0);
    z_stream zs;
    std::memset(&zs, 0, sizeof(zs));
    if (inflateInit2(&zs, -MAX_WBITS) != Z_OK)
        return px_err(errbuf, errlen, CXR_ENOMEM, "%s: cannot set up zlib", name);
    zs.next_out = out.data();
    zs.avail_out = static_cast<uInt>(out.size());
    int zr = Z_OK;
    cxr_err err = CXR_OK;
    for (unsigned long i = 1; i < nitems && zr != Z_STREAM_END; i++) {
        DcmPixelItem *item = nullptr;
        Uint8 *p = nullptr;
        if (seq->getItem(item, i).bad() || !item) {
            err = px_err(errbuf, errlen, CXR_EDICOM, "%s: unreadable fragment %lu", name, i);
            break;
        }
        Uint32 len = item->getLength();
        if (len == 0)
            continue;
        if (item->getUint8Array(p).bad() || !p) {
            err = px_err(errbuf, errlen, CXR_EDICOM, "%s: unreadable fragment %lu", name, i);
            break;
        }
        zs.next_in = p;
        zs.avail_in = len;
        zr = inflate(&zs, Z_NO_FLUSH);
        if (zr != Z_OK && zr != Z_STREAM_END) {
            if (zr == Z_BUF_ERROR && zs.avail_out == 0)
                err = px_err(errbuf, errlen, CXR_EDICOM,
                             "%s: corrupt deflated frame 0: it inflates to more than the "
                             "frame's %zu bytes",
                             name, need);
            else
                err = px_err(errbuf, errlen, CXR_EDICOM, "%s: corrupt deflated frame 0: %s",
                             name, zs.msg ? zs.msg : "inflate failed");
            break;
        }
    }
    size_t got = out.size() - zs.avail_out;
    (void)inflateEnd(&zs);
    if (err)
        return err;
    if (zr != Z_STREAM_END && zs.avail_out == 0)
        return px_err(errbuf, errlen, CXR_EDICOM,
                      "%s: corrupt deflated frame 0: it inflates to more than the frame's %zu "
                      "bytes",
                      name, need);
    if (zr != Z_STREAM_END)
        return px_err(errbuf, errlen, CXR_EDICOM,
                      "%s: deflated frame 0 is truncated (the stream does not end; %zu of %zu "
                      "bytes)",
                      name, got, need);
    if (got != need && got != need + 1)
        return px_err(errbuf, errlen, CXR_EDICOM,
                      "%s: deflated frame 0 inflates to %zu bytes, Rows x Columns (%dx%d) x %d x "
                      "%d bits need %zu",
                      name, got, f->info.rows, f->info.columns, f->info.samples_per_pixel,
                      f->info.bits_allocated, need);
    out.resize(need);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    /* unpack_frame() wants host order */
    size_t w = f->info.bits_allocated > 8 ? static_cast<size_t>(f->info.bits_allocated / 8) : 1;
    for (size_t i = 0; w > 1 && i + w <= need; i += w)
        std::reverse(out.begin() + static_cast<long>(i), out.begin() + static_cast<long>(i + w));
#endif
    return CXR_OK;
}

/* Frame 0 of JPEG-LS pixel data through CharLS, into native host-order bytes (frame_bytes());
 * *planar is set from the scan's interleave mode. dcmtk_why: DCMTK's reason, for the message. */
cxr_err decode_jpegls(dcm_file *f, const char *dcmtk_why, std::vector<Uint8> &out, int *planar,
                      char *errbuf, size_t errlen)
{
    const char *name = f->name.c_str();
    const struct dcm_info *in = &f->info;
    std::vector<Uint8> cs;
    cxr_err err = codestream_frame0(f, "JPEG-LS", cs, errbuf, errlen);
    if (err)
        return err;
    const charls_jpegls_errc OK = charls::jpegls_errc::success;
    charls_jpegls_decoder *dec = charls_jpegls_decoder_create();
    if (!dec)
        return px_err(errbuf, errlen, CXR_ENOMEM, "%s: out of memory", name);
    charls_frame_info fi = {};
    charls_interleave_mode im = charls::interleave_mode::none;
    size_t need = frame_bytes(in), dsize = 0;
    const char *stage = "header";
    charls_jpegls_errc e = charls_jpegls_decoder_set_source_buffer(dec, cs.data(), cs.size());
    if (e == OK)
        e = charls_jpegls_decoder_read_header(dec);
    if (e == OK)
        e = charls_jpegls_decoder_get_frame_info(dec, &fi);
    if (e == OK)
        e = charls_jpegls_decoder_get_interleave_mode(dec, &im);
    if (e != OK) {
        err = px_err(errbuf, errlen, CXR_EDICOM,
                     "%s: cannot decode %s pixel data: DCMTK: %s; CharLS: %s: %s", name,
                     in->transfer_syntax_name, dcmtk_why, stage, charls_get_error_message(e));
        goto out;
    }
    /* Only a stream that is exactly what the header says, at the header's sample width. */
    if (fi.width != static_cast<uint32_t>(in->columns) ||
        fi.height != static_cast<uint32_t>(in->rows) ||
        fi.component_count != in->samples_per_pixel || fi.bits_per_sample < 2 ||
        fi.bits_per_sample > in->bits_allocated ||
        (in->bits_allocated == 8) != (fi.bits_per_sample <= 8) ||
        (in->bits_allocated != 8 && in->bits_allocated != 16)) {
        err = px_err(errbuf, errlen, CXR_EDICOM,
                     "%s: JPEG-LS stream is %ux%u with %d components of %d bits, the header says "
                     "%dx%d with %d of %d bits allocated",
                     name, fi.width, fi.height, fi.component_count, fi.bits_per_sample,
                     in->columns, in->rows, in->samples_per_pixel, in->bits_allocated);
        goto out;
    }
    stage = "decoding";
    e = charls_jpegls_decoder_get_destination_size(dec, 0, &dsize);
    if (e == OK && dsize != need) {
        err = px_err(errbuf, errlen, CXR_EDICOM,
                     "%s: JPEG-LS frame decodes to %zu bytes, the header needs %zu", name, dsize,
                     need);
        goto out;
    }
    out.assign(need, 0);
    if (e == OK)
        e = charls_jpegls_decoder_decode_to_buffer(dec, out.data(), out.size(), 0);
    if (e != OK) {
        err = px_err(errbuf, errlen, CXR_EDICOM,
                     "%s: cannot decode %s pixel data: DCMTK: %s; CharLS: %s: %s", name,
                     in->transfer_syntax_name, dcmtk_why, stage, charls_get_error_message(e));
        goto out;
    }
    *planar = in->samples_per_pixel == 3 && im == charls::interleave_mode::none ? 1 : 0;
out:
    charls_jpegls_decoder_destroy(dec);
    return err;
}

bool photometric_is(const char *p, const char *want)
{
    return std::strcmp(p, want) == 0;
}

/* Native (uncompressed, little-endian host order) pixel data of frame 0 -> img. */
cxr_err unpack_native(dcm_file *f, const char *photometric, int planar, struct px_image *img,
                      char *errbuf, size_t errlen)
{
    const char *name = f->name.c_str();
    const struct dcm_info *in = &f->info;
    DcmDataset *ds = f->ff.getDataset();
    DcmElement *el = nullptr;
    Uint8 *raw = nullptr;

    if (ds->findAndGetElement(DCM_PixelData, el).bad() || !el)
        return px_err(errbuf, errlen, CXR_EDICOM, "%s: no pixel data", name);
    Uint32 len = el->getLength();
    if (len == 0)
        return px_err(errbuf, errlen, CXR_EDICOM, "%s: pixel data is empty (zero length)", name);
    size_t need = frame_bytes(in);
    if (len < need)
        return px_err(errbuf, errlen, CXR_EDICOM,
                      "%s: pixel data has %lu bytes, Rows x Columns (%dx%d) x %d x %d bits need "
                      "%zu",
                      name, static_cast<unsigned long>(len), in->rows, in->columns,
                      in->samples_per_pixel, in->bits_allocated, need);
    if (in->bits_allocated == 16) {
        Uint16 *w = nullptr;
        if (el->getUint16Array(w).bad() || !w)
            return px_err(errbuf, errlen, CXR_EDICOM, "%s: unreadable pixel data", name);
        raw = reinterpret_cast<Uint8 *>(w);
    } else if (el->getUint8Array(raw).bad() || !raw) {
        return px_err(errbuf, errlen, CXR_EDICOM, "%s: unreadable pixel data", name);
    }
    return unpack_frame(f, raw, photometric, planar, img, errbuf, errlen);
}

/* One frame's samples in host order (raw holds at least frame_bytes(in) bytes, aligned for its
 * Bits Allocated) -> img. */
cxr_err unpack_frame(dcm_file *f, const Uint8 *raw, const char *photometric, int planar,
                     struct px_image *img, char *errbuf, size_t errlen)
{
    const char *name = f->name.c_str();
    const struct dcm_info *in = &f->info;
    int ba = in->bits_allocated, spp = in->samples_per_pixel;
    size_t npix = static_cast<size_t>(in->rows) * static_cast<size_t>(in->columns);
    size_t nsamp = npix * static_cast<size_t>(spp);
    cxr_err err = px_image_alloc(img, in->columns, in->rows, spp == 3 ? 3 : 1, name, errbuf,
                                 errlen);
    if (err)
        return err;
    int bs = in->bits_stored, hb = in->high_bit;
    int shift = hb - bs + 1;
    if (shift < 0 || hb >= ba)
        shift = 0;
    uint32_t mask = bs >= 32 ? 0xffffffffu : ((1u << bs) - 1u);
    bool sgn = in->pixel_representation == 1;
    img->bits = bs;
    img->is_signed = sgn;
    if (spp == 1 && (ba == 8 || ba == 16)) {
        /* The common case, kept to one tight loop per depth. */
        int up = 32 - bs;
        int32_t *dst = img->samples;
        if (ba == 16) {
            const Uint16 *src = reinterpret_cast<const Uint16 *>(raw);
            for (size_t i = 0; i < nsamp; i++) {
                uint32_t v = (static_cast<uint32_t>(src[i]) >> shift) & mask;
                dst[i] = sgn ? static_cast<int32_t>(v << up) >> up : static_cast<int32_t>(v);
            }
        } else {
            for (size_t i = 0; i < nsamp; i++) {
                uint32_t v = (static_cast<uint32_t>(raw[i]) >> shift) & mask;
                dst[i] = sgn ? static_cast<int32_t>(v << up) >> up : static_cast<int32_t>(v);
            }
        }
        return CXR_OK;
    }
    for (size_t i = 0; i < nsamp; i++) {
        size_t src = i;
        if (spp == 3 && planar == 1) /* RRR..GGG..BBB -> RGBRGB */
            src = (i % 3) * npix + i / 3;
        uint32_t v;
        switch (ba) {
        case 1: v = (raw[src >> 3] >> (src & 7)) & 1u; break;
        case 8: v = raw[src]; break;
        case 16: {
            Uint16 u;
            std::memcpy(&u, raw + 2 * src, 2);
            v = u;
            break;
        }
        default: {
            Uint32 u;
            std::memcpy(&u, raw + 4 * src, 4);
            v = u;
            break;
        }
        }
        v = (v >> shift) & mask;
        int32_t s;
        if (sgn && bs < 32 && (v & (1u << (bs - 1))))
            s = static_cast<int32_t>(v | ~mask);
        else
            s = static_cast<int32_t>(v);
        img->samples[i] = s;
    }
    if (spp == 3 && (photometric_is(photometric, "YBR_FULL"))) {
        for (size_t i = 0; i < npix; i++) {
            double y = img->samples[3 * i], cb = img->samples[3 * i + 1] - 128.0,
                   cr = img->samples[3 * i + 2] - 128.0;
            img->samples[3 * i] = static_cast<int32_t>(std::lround(y + 1.402 * cr));
            img->samples[3 * i + 1] =
                static_cast<int32_t>(std::lround(y - 0.344136 * cb - 0.714136 * cr));
            img->samples[3 * i + 2] = static_cast<int32_t>(std::lround(y + 1.772 * cb));
        }
    }
    return CXR_OK;
}

/* Expands one 16-bit Segmented Palette Color LUT (PS3.3 C.7.9.2) into out (exactly n entries).
 * Segments: 0 discrete (length values), 1 linear (from the previous value to y1 over length
 * entries, rounded half to even as pydicom does), 2 indirect (length segments copied from a
 * 32-bit word offset, low word first; not nested). Every count and offset is checked against
 * the data; expansion stops at n entries, so the work is bounded by n + the data's length. */
bool expand_segments(const Uint16 *d, unsigned long count, unsigned long from, unsigned long nseg,
                     bool nested, std::vector<Uint16> &out, size_t n, const char **why)
{
    unsigned long o = from, done = 0;
    while (o + 1 < count && out.size() < n && (nseg == 0 || done < nseg)) {
        unsigned op = d[o], len = d[o + 1];
        o += 2;
        if (op == 0) {
            if (len > count - o) {
                *why = "a discrete segment runs past the end of the data";
                return false;
            }
            for (unsigned k = 0; k < len && out.size() < n; k++)
                out.push_back(d[o + k]);
            o += len;
        } else if (op == 1) {
            if (o >= count) {
                *why = "a linear segment runs past the end of the data";
                return false;
            }
            if (out.empty()) {
                *why = "the first segment is a linear one";
                return false;
            }
            double y0 = out.back(), y1 = d[o++];
            if (len == 1 || y0 == y1) {
                for (unsigned k = 0; k < len && out.size() < n; k++)
                    out.push_back(static_cast<Uint16>(y1));
            } else if (len > 1) {
                /* numpy.around(numpy.linspace(y0 + step, y1, len)), step = (y1 - y0) / len */
                double start = y0 + (y1 - y0) / len, step = (y1 - start) / (len - 1);
                for (unsigned k = 0; k < len && out.size() < n; k++) {
                    double v = k + 1 == len ? y1 : k * step + start;
                    out.push_back(static_cast<Uint16>(std::nearbyint(v)));
                }
            }
        } else if (op == 2) {
            if (nested || count - o < 2) {
                *why = nested ? "an indirect segment refers to another indirect segment"
                              : "an indirect segment runs past the end of the data";
                return false;
            }
            if (out.empty()) {
                *why = "the first segment is an indirect one";
                return false;
            }
            unsigned long at = (static_cast<unsigned long>(d[o + 1]) << 16) | d[o];
            o += 2;
            if (at >= count) {
                *why = "an indirect segment points past the end of the data";
                return false;
            }
            if (!expand_segments(d, count, at, len, true, out, n, why))
                return false;
        } else {
            *why = "unknown segment type";
            return false;
        }
        done++;
    }
    return true;
}

/* PALETTE COLOR: indices -> RGB through the three Palette Color LUTs, plain or segmented. */
cxr_err expand_palette(dcm_file *f, struct px_image *img, char *errbuf, size_t errlen)
{
    static const DcmTagKey desc_tags[3] = {DCM_RedPaletteColorLookupTableDescriptor,
                                           DCM_GreenPaletteColorLookupTableDescriptor,
                                           DCM_BluePaletteColorLookupTableDescriptor};
    static const DcmTagKey data_tags[3] = {DCM_RedPaletteColorLookupTableData,
                                           DCM_GreenPaletteColorLookupTableData,
                                           DCM_BluePaletteColorLookupTableData};
    const char *name = f->name.c_str();
    DcmDataset *ds = f->ff.getDataset();
    static const DcmTagKey seg_tags[3] = {DCM_SegmentedRedPaletteColorLookupTableData,
                                          DCM_SegmentedGreenPaletteColorLookupTableData,
                                          DCM_SegmentedBluePaletteColorLookupTableData};
    const Uint16 *lut[3] = {nullptr, nullptr, nullptr};
    std::vector<Uint16> expanded[3];
    unsigned long entries[3] = {0, 0, 0};
    int first[3] = {0, 0, 0}, bits = 8;

    if (img->channels != 1)
        return px_err(errbuf, errlen, CXR_EDICOM, "%s: PALETTE COLOR with %d samples per pixel",
                      name, img->channels);
    for (int c = 0; c < 3; c++) {
        Uint16 d0 = 0, d1 = 0, d2 = 0;
        unsigned long count = 0;
        if (ds->findAndGetUint16(desc_tags[c], d0, 0).bad() ||
            ds->findAndGetUint16(desc_tags[c], d1, 1).bad() ||
            ds->findAndGetUint16(desc_tags[c], d2, 2).bad())
            return px_err(errbuf, errlen, CXR_EDICOM,
                          "%s: PALETTE COLOR without a Palette Color LUT Descriptor", name);
        entries[c] = d0 == 0 ? 65536UL : d0;
        first[c] = d1;
        bits = d2 > 8 ? 16 : 8;
        if (ds->findAndGetUint16Array(data_tags[c], lut[c], &count).bad() || !lut[c]) {
            const Uint16 *seg = nullptr;
            const char *why = nullptr;
            if (ds->findAndGetUint16Array(seg_tags[c], seg, &count).bad() || !seg)
                return px_err(errbuf, errlen, CXR_EDICOM,
                              "%s: PALETTE COLOR without Palette Color LUT Data (plain or "
                              "segmented)",
                              name);
            if (d2 != 16)
                return px_err(errbuf, errlen, CXR_EUNSUPPORTED,
                              "%s: %u-bit segmented Palette Color LUTs are not supported", name,
                              static_cast<unsigned>(d2));
            expanded[c].reserve(entries[c]);
            if (!expand_segments(seg, count, 0, 0, false, expanded[c], entries[c], &why))
                return px_err(errbuf, errlen, CXR_EDICOM,
                              "%s: bad segmented Palette Color LUT %d: %s", name, c, why);
            if (expanded[c].size() < entries[c])
                return px_err(errbuf, errlen, CXR_EDICOM,
                              "%s: segmented Palette Color LUT %d expands to %zu entries, the "
                              "descriptor says %lu",
                              name, c, expanded[c].size(), entries[c]);
            lut[c] = expanded[c].data();
            continue;
        }
        if (count < entries[c]) {
            /* 8-bit entries packed two per 16-bit word */
            if (d2 == 8 && count * 2 >= entries[c])
                return px_err(errbuf, errlen, CXR_EUNSUPPORTED,
                              "%s: packed 8-bit Palette Color LUTs are not supported", name);
            return px_err(errbuf, errlen, CXR_EDICOM, "%s: Palette Color LUT %d is too short",
                          name, c);
        }
    }
    struct px_image rgb = {};
    cxr_err err = px_image_alloc(&rgb, img->width, img->height, 3, name, errbuf, errlen);
    if (err)
        return err;
    size_t n = static_cast<size_t>(img->width) * static_cast<size_t>(img->height);
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < 3; c++) {
            long k = static_cast<long>(img->samples[i]) - first[c];
            if (k < 0)
                k = 0;
            if (k >= static_cast<long>(entries[c]))
                k = static_cast<long>(entries[c]) - 1;
            Uint16 v = lut[c][k];
            rgb.samples[3 * i + c] = bits == 8 ? (v & 0xff) : v;
        }
    rgb.bits = bits;
    rgb.is_signed = false;
    px_image_done(img);
    *img = rgb;
    return CXR_OK;
}

cxr_err decode(dcm_file *f, struct px_image *ret, char *errbuf, size_t errlen)
{
    const char *name = f->name.c_str();
    const struct dcm_info *in = &f->info;
    DcmDataset *ds = f->ff.getDataset();

    if (!in->has_pixel_data)
        return px_err(errbuf, errlen, CXR_EUNSUPPORTED,
                      "%s: not an image: no Pixel Data (SOP Class %s, Modality %s)", name,
                      in->sop_class_uid[0] ? in->sop_class_uid : "unknown",
                      in->modality[0] ? in->modality : "none");
    if (in->rows <= 0 || in->columns <= 0 || in->rows > PX_MAX_SIDE || in->columns > PX_MAX_SIDE)
        return px_err(errbuf, errlen, CXR_EDICOM, "%s: Rows x Columns %dx%d is out of range", name,
                      in->rows, in->columns);
    int ba = in->bits_allocated, bs = in->bits_stored;
    if (ba != 1 && ba != 8 && ba != 16 && ba != 32)
        return px_err(errbuf, errlen, CXR_EUNSUPPORTED, "%s: Bits Allocated %d is not supported",
                      name, ba);
    if (bs < 1 || bs > ba)
        return px_err(errbuf, errlen, CXR_EDICOM, "%s: Bits Stored %d with Bits Allocated %d",
                      name, bs, ba);
    if (in->samples_per_pixel != 1 && in->samples_per_pixel != 3)
        return px_err(errbuf, errlen, CXR_EUNSUPPORTED, "%s: %d samples per pixel", name,
                      in->samples_per_pixel);
    double total = static_cast<double>(in->rows) * in->columns * in->samples_per_pixel *
                   in->number_of_frames * (ba < 8 ? 1 : ba / 8);
    if (total > static_cast<double>(DCM_MAX_DECODED_BYTES))
        return px_err(errbuf, errlen, CXR_ELIMIT,
                      "%s: %dx%d x %d frames would decode to more than %zu MiB", name, in->rows,
                      in->columns, in->number_of_frames, DCM_MAX_DECODED_BYTES >> 20);

    if (is_j2k(f->xfer_uid)) {
        std::vector<OPJ_BYTE> cs;
        cxr_err err = codestream_frame0(f, "JPEG 2000", cs, errbuf, errlen);
        if (err)
            return err;
        return decode_j2k(f, cs, ret, errbuf, errlen);
    }

    if (f->xfer_uid == "1.2.840.10008.1.2.8.1") {
        std::vector<Uint8> frame;
        cxr_err err = inflate_frame0(f, frame, errbuf, errlen);
        if (err)
            return err;
        char photometric[33];
        get_str(ds, DCM_PhotometricInterpretation, photometric, sizeof(photometric));
        err = unpack_frame(f, frame.data(), photometric, get_int(ds, DCM_PlanarConfiguration, 0),
                           ret, errbuf, errlen);
        if (!err && photometric_is(photometric, "PALETTE COLOR"))
            err = expand_palette(f, ret, errbuf, errlen);
        return err;
    }

    E_TransferSyntax xs = ds->getOriginalXfer();
    DcmXfer xf(xs);
    if (!f->xfer_uid.empty() && DcmXfer(f->xfer_uid.c_str()).getXfer() == EXS_Unknown)
        return px_err(errbuf, errlen, CXR_EUNSUPPORTED,
                      "%s: unsupported transfer syntax %s (%s)", name, f->xfer_uid.c_str(),
                      in->transfer_syntax_name);
    /* read after decoding: DCMTK's JPEG decoder updates both (YBR -> RGB, planar 0) */
    char photometric[33];
    int planar;
    cxr_err err;
    if (xf.isEncapsulated()) {
        OFCondition c = ds->chooseRepresentation(EXS_LittleEndianExplicit, nullptr);
        if (c.bad() || !ds->canWriteXfer(EXS_LittleEndianExplicit)) {
            const char *why =
                c.bad() ? c.text() : "the decoder gave up (corrupt or truncated data)";
            if (xs != EXS_JPEGLSLossless && xs != EXS_JPEGLSLossy)
                return px_err(errbuf, errlen, CXR_EDICOM, "%s: cannot decode %s pixel data: %s",
                              name, in->transfer_syntax_name, why);
            /* DCMTK 3.6.7's JPEG-LS decoder rejects some valid streams (a 7-bit one): CharLS. */
            get_str(ds, DCM_PhotometricInterpretation, photometric, sizeof(photometric));
            planar = get_int(ds, DCM_PlanarConfiguration, 0);
            std::vector<Uint8> frame;
            err = decode_jpegls(f, why, frame, &planar, errbuf, errlen);
            if (!err)
                err = unpack_frame(f, frame.data(), photometric, planar, ret, errbuf, errlen);
            if (!err && photometric_is(photometric, "PALETTE COLOR"))
                err = expand_palette(f, ret, errbuf, errlen);
            return err;
        }
    }
    get_str(ds, DCM_PhotometricInterpretation, photometric, sizeof(photometric));
    planar = get_int(ds, DCM_PlanarConfiguration, 0);
    err = unpack_native(f, photometric, planar, ret, errbuf, errlen);
    if (!err && photometric_is(photometric, "PALETTE COLOR"))
        err = expand_palette(f, ret, errbuf, errlen);
    return err;
}

/* Parses the file open on fd into f->ff through its /proc path, keeping a duplicate of fd in
 * f->fd for DCMTK's lazy loading of large values. Returns false (f untouched) when fd cannot
 * be read that way; *ret_c is the parse's result otherwise. */
bool read_fd(dcm_file *f, int fd, OFCondition *ret_c)
{
    char path[64];
    int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);

    if (dfd < 0)
        return false;
    std::snprintf(path, sizeof(path), "/proc/self/fd/%d", dfd);
    if (access(path, R_OK) == 0) {
        DcmInputFileStream is(path);
        if (is.status().good()) {
            f->fd = dfd;
            f->ff.transferInit();
            *ret_c = f->ff.read(is, EXS_Unknown, EGL_noChange, DCM_MaxReadLength);
            f->ff.transferEnd();
            return true;
        }
    }
    (void)close(dfd);
    return false;
}

/* Parses data into f->ff. DCMTK allocates a value from its length field unless the value is
 * larger than maxReadLength and the stream is a file: then it skips the bytes, checking them
 * against the file's size ("larger than remaining bytes in file"), and loads them on first use.
 * So the bytes are read from a file: file_fd when the caller has one holding exactly data (a
 * mapped spool file: no copy at all), else a memory file (memfd) they are copied into; where
 * neither is possible, a buffer stream (dcm_scan_structure() has bounded the lengths either
 * way). */
OFCondition read_dataset(dcm_file *f, const void *data, size_t len, int file_fd)
{
    OFCondition c;

    if (file_fd >= 0 && read_fd(f, file_fd, &c))
        return c;
    int fd = memfd_create("cxr-dicom", MFD_CLOEXEC);
    if (fd >= 0) {
        const char *p = static_cast<const char *>(data);
        size_t done = 0;
        while (done < len) {
            ssize_t n = write(fd, p + done, len - done);
            if (n <= 0)
                break;
            done += static_cast<size_t>(n);
        }
        bool ok = done == len && read_fd(f, fd, &c);
        (void)close(fd);
        if (ok)
            return c;
    }
    DcmInputBufferStream is;
    is.setBuffer(data, static_cast<offile_off_t>(len));
    is.setEos();
    f->ff.transferInit();
    c = f->ff.read(is, EXS_Unknown, EGL_noChange, 0xfffffffeU);
    f->ff.transferEnd();
    return c;
}

} /* namespace */

extern "C" cxr_err dcm_global_init(void)
{
    try {
        if (pthread_once(&g_once, global_init_once) != 0)
            return CXR_EDICOM;
        return g_dict_ok ? CXR_OK : CXR_EDICOM;
    } catch (const std::bad_alloc &) {
        return CXR_ENOMEM;
    } catch (...) {
        return CXR_EDICOM;
    }
}

extern "C" cxr_err dcm_file_open_fd(const void *data, size_t len, int fd, const char *name,
                                    dcm_file **ret, char *errbuf, size_t errlen)
{
    dcm_file *f = nullptr;
    if (!name)
        name = "<memory>";
    try {
        if (dcm_global_init() != CXR_OK)
            return px_err(errbuf, errlen, CXR_EDICOM, "%s: the DICOM data dictionary is missing",
                          name);
        if (len > DCM_MAX_FILE_BYTES)
            return px_err(errbuf, errlen, CXR_ELIMIT, "%s: file is larger than %zu MiB", name,
                          DCM_MAX_FILE_BYTES >> 20);
        if (px_detect(data, len) != PX_FMT_DICOM)
            return px_err(errbuf, errlen, CXR_EPARSE,
                          "%s: not a DICOM file (no DICM preamble and no dataset start)", name);
        cxr_err serr = dcm_scan_structure(data, len, name, errbuf, errlen);
        if (serr)
            return serr;
        f = new dcm_file();
        f->name = name;
        OFCondition c = read_dataset(f, data, len, fd);
        if (c.bad()) {
            cxr_err err = dcm_cond_err(c, errbuf, errlen, name, "cannot parse the DICOM file");
            if (c == EC_StreamNotifyClient || c == EC_EndOfStream || c == EC_InvalidStream)
                err = px_err(errbuf, errlen, CXR_EPARSE,
                             "%s: truncated or malformed DICOM file: the data ends inside an "
                             "element or is not DICOM (%s)",
                             name, c.text());
            delete f;
            return err;
        }
        read_info(f);
        if (!f->info.sop_class_uid[0] && !f->info.has_pixel_data && !f->info.modality[0]) {
            delete f;
            return px_err(errbuf, errlen, CXR_EPARSE,
                          "%s: not a DICOM file (no SOP Class, Modality or Pixel Data)", name);
        }
        *ret = f;
        return CXR_OK;
    } catch (const std::bad_alloc &) {
        delete f;
        return px_err(errbuf, errlen, CXR_ENOMEM, "%s: out of memory", name);
    } catch (...) {
        delete f;
        return px_err(errbuf, errlen, CXR_EDICOM, "%s: DICOM parser failed", name);
    }
}

extern "C" cxr_err dcm_file_open_mem(const void *data, size_t len, const char *name,
                                     dcm_file **ret, char *errbuf, size_t errlen)
{
    return dcm_file_open_fd(data, len, -1, name, ret, errbuf, errlen);
}

extern "C" cxr_err dcm_file_open(const char *path, dcm_file **ret, char *errbuf, size_t errlen)
{
    char *data = nullptr;
    size_t len = 0;
    cxr_err err = px_read_file(path, &data, &len, errbuf, errlen);
    if (err)
        return err;
    err = dcm_file_open_mem(data, len, path, ret, errbuf, errlen);
    std::free(data);
    return err;
}

extern "C" const struct dcm_info *dcm_file_info(const dcm_file *f)
{
    return &f->info;
}

extern "C" cxr_err dcm_file_decode(dcm_file *f, struct px_image *ret_img, char *errbuf,
                                   size_t errlen)
{
    struct px_image img = {};
    try {
        cxr_err err = decode(f, &img, errbuf, errlen);
        if (err) {
            px_image_done(&img);
            return err;
        }
        *ret_img = img;
        return CXR_OK;
    } catch (const std::bad_alloc &) {
        px_image_done(&img);
        return px_err(errbuf, errlen, CXR_ENOMEM, "%s: out of memory", f->name.c_str());
    } catch (...) {
        px_image_done(&img);
        return px_err(errbuf, errlen, CXR_EDICOM, "%s: DICOM decoder failed", f->name.c_str());
    }
}

extern "C" void dcm_file_free(dcm_file *f)
{
    try {
        delete f;
    } catch (...) {
        /* a destructor that throws leaves nothing we could do */
    }
}

extern "C" const char *dcm_uid_name(const char *uid)
{
    try {
        return uid ? dcmFindNameOfUID(uid, NULL) : NULL;
    } catch (...) {
        return NULL;
    }
}
