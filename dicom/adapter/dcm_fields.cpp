/*
 * dcm_fields.cpp - dcm_read_report_fields(): the header fields the HL7 / FHIR reports need,
 * transcoded to UTF-8 (see dicom.h, "the report fields").
 *
 * Design. The header is read with DCMTK's loadFileUntilTag(Pixel Data) with a 4096-byte
 * maxReadLength, so the pixel data is never read and larger values stay in the file (DCMTK
 * checks their lengths against the file's size) until one of ours asks for it; we refuse to
 * load any value over DCM_RF_MAX_VALUE. Transcoding is per field: one DcmSpecificCharacterSet
 * per data set (the top level, and any sequence item with its own (0008,0005)) converts each
 * value with the delimiters of its VR (PN: "\^=", so ISO 2022 code extensions are reset where
 * PS3.5 says). Whatever fails (no converter, an illegal byte sequence, a UTF-8 "conversion"
 * that is not valid UTF-8) degrades that one field to its ASCII characters with '?' for the rest,
 * skipping ISO 2022 escape sequences and the two-byte characters they announce, and sets a
 * warning bit; the call itself succeeds. Every exception is caught here: nothing C++ crosses
 * into C. Values never appear in errbuf or warning_text (PHI).
 */
#include <fcntl.h>
#include <iconv.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include <dcmtk/config/osconfig.h>

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcitem.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcspchrs.h>

extern "C" {
#include "dicom.h"
#include "dicom_int.h"
}

namespace
{

const char PN_DELIMS[] = "\\^=";
const char TEXT_DELIMS[] = "\\";

/* The character set converter of one data set (top level or a sequence item). */
struct charset {
    DcmSpecificCharacterSet conv;
    std::string name;      /* (0008,0005) as found, trimmed */
    bool ok = false;       /* conv selected: convertString() may be used */
    bool jis = false;      /* !ok, but Japanese ISO 2022 that jis_convert() handles */
    bool jis_ir13 = false; /* ... with ISO 2022 IR 13 as the first value */
};

/* glibc's iconv has no converter for JIS X 0208 (ISO 2022 IR 87) or JIS X 0212 (IR 159) on its
 * own, the names DCMTK asks for, so DCMTK cannot select "ISO 2022 IR 13\ISO 2022 IR 87" and
 * the like here. These values are decoded by jis_convert() instead when every value of
 * (0008,0005) is one of ISO 2022 IR 6, 13, 87, 159. */
void check_jis(charset &cs)
{
    std::string v = cs.name;
    bool multi = false, first = true;
    size_t at = 0;
    cs.jis = cs.jis_ir13 = false;
    for (;;) {
        size_t end = v.find('\\', at);
        std::string one = v.substr(at, end == std::string::npos ? std::string::npos : end - at);
        while (!one.empty() && one.back() == ' ')
            one.pop_back();
        while (!one.empty() && one.front() == ' ')
            one.erase(0, 1);
        if (one == "ISO 2022 IR 87" || one == "ISO 2022 IR 159")
            multi = true;
        else if (one == "ISO 2022 IR 13")
            cs.jis_ir13 = cs.jis_ir13 || first;
        else if (!(one.empty() && first) && one != "ISO 2022 IR 6")
            return;
        first = false;
        if (end == std::string::npos)
            break;
        at = end + 1;
    }
    cs.jis = multi;
    if (!multi)
        cs.jis_ir13 = false;
}

/* One run of JIS X 0208 / 0212 two-byte characters (7-bit) to UTF-8, through glibc's
 * ISO-2022-JP-2 (which knows both, announced by their escape sequences). */
bool jis_run(const std::string &esc, const char *p, size_t n, std::string &out)
{
    if (n == 0)
        return true;
    if (n % 2)
        return false;
    std::string in = esc + std::string(p, n) + "\x1b(B";
    iconv_t cd = iconv_open("UTF-8", "ISO-2022-JP-2");
    if (reinterpret_cast<std::intptr_t>(cd) == -1) /* (iconv_t)-1 */
        return false;
    std::string buf(n * 2 + 16, '\0');
    char *ip = &in[0], *op = &buf[0];
    size_t il = in.size(), ol = buf.size();
    size_t rc = iconv(cd, &ip, &il, &op, &ol);
    (void)iconv_close(cd);
    if (rc == static_cast<size_t>(-1) || il != 0)
        return false;
    out.append(buf.data(), buf.size() - ol);
    return true;
}

/* Japanese ISO 2022 (PS3.5 6.1.2.5, Annex H): G0 ASCII / JIS X 0201 Roman (as ASCII) / JIS X
 * 0208 / JIS X 0212 by escape sequence, G1 JIS X 0201 Katakana (GR, to U+FF61..U+FF9F) when
 * ISO 2022 IR 13 is designated. CR, LF, FF and HT return to the initial state. */
bool jis_convert(const charset &cs, const char *p, size_t n, std::string &out)
{
    enum { G_ASCII, G_208, G_212 } g0 = G_ASCII;
    bool kana = cs.jis_ir13;
    out.clear();
    for (size_t i = 0; i < n;) {
        unsigned char c = static_cast<unsigned char>(p[i]);
        if (c == 0x1B) {
            std::string seq;
            size_t j = i + 1;
            while (j < n && seq.size() < 3) {
                seq += p[j];
                if (static_cast<unsigned char>(p[j++]) >= 0x30)
                    break;
            }
            if (seq == "(B" || seq == "(J")
                g0 = G_ASCII;
            else if (seq == "$B" || seq == "$@")
                g0 = G_208;
            else if (seq == "$(D")
                g0 = G_212;
            else if (seq == ")I")
                kana = true;
            else
                return false;
            i = j;
            continue;
        }
        if (c == '\r' || c == '\n' || c == '\f' || c == '\t') {
            g0 = G_ASCII;
            kana = cs.jis_ir13;
            out += static_cast<char>(c);
            i++;
            continue;
        }
        if (g0 != G_ASCII) {
            size_t j = i;
            while (j < n && static_cast<unsigned char>(p[j]) >= 0x21 &&
                   static_cast<unsigned char>(p[j]) <= 0x7E)
                j++;
            if (j == i || !jis_run(g0 == G_208 ? "\x1b$B" : "\x1b$(D", p + i, j - i, out))
                return false;
            i = j;
            continue;
        }
        if (c < 0x80) {
            out += static_cast<char>(c);
        } else if (kana && c >= 0xA1 && c <= 0xDF) {
            unsigned cp = 0xFF61 + (c - 0xA1);
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
            return false;
        }
        i++;
    }
    return true;
}

void select_charset(DcmItem *it, charset &cs)
{
    OFString v;
    cs.name.clear();
    if (it->findAndGetOFStringArray(DCM_SpecificCharacterSet, v).good())
        cs.name.assign(v.c_str(), v.size());
    while (!cs.name.empty() && (cs.name.back() == ' ' || cs.name.back() == '\0'))
        cs.name.pop_back();
    size_t a = cs.name.find_first_not_of(' ');
    cs.name.erase(0, a == std::string::npos ? cs.name.size() : a);
    cs.ok = DcmSpecificCharacterSet::isConversionAvailable() &&
            cs.conv.selectCharacterSet(OFString(cs.name.c_str())).good();
    if (!cs.ok)
        check_jis(cs);
}

bool utf8_valid(const std::string &s)
{
    size_t i = 0, n = s.size();
    while (i < n) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        size_t k;
        unsigned cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            k = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + k >= n)
            return false;
        for (size_t j = 1; j <= k; j++) {
            unsigned char d = static_cast<unsigned char>(s[i + j]);
            if ((d & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (d & 0x3F);
        }
        if ((k == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return false;
        i += k + 1;
    }
    return true;
}

/* The lossy fallback: ASCII kept, every other character '?'. ISO 2022 escape sequences are
 * dropped, and the 7-bit two-byte characters after a multi-byte G0 designation (ESC $ B,
 * ESC $ ( D, ...) become one '?' each, until a single-byte designation or a CR / LF / FF / HT.
 * A UTF-8-looking sequence becomes one '?'. */
std::string ascii_fallback(const char *p, size_t n)
{
    std::string out;
    bool mb = false;
    out.reserve(n);
    for (size_t i = 0; i < n;) {
        unsigned char c = static_cast<unsigned char>(p[i]);
        if (c == 0x1B) {
            size_t j = i + 1;
            std::string inter;
            while (j < n && static_cast<unsigned char>(p[j]) >= 0x20 &&
                   static_cast<unsigned char>(p[j]) <= 0x2F)
                inter += p[j++];
            if (j < n && static_cast<unsigned char>(p[j]) >= 0x30 &&
                static_cast<unsigned char>(p[j]) <= 0x7E)
                j++;
            if (inter == "$" || inter == "$(")
                mb = true;
            else if (inter == "(")
                mb = false;
            i = j;
            continue;
        }
        if (c == '\r' || c == '\n' || c == '\f' || c == '\t') {
            mb = false;
            out += ' ';
            i++;
            continue;
        }
        if (mb && c >= 0x21 && c <= 0x7E) {
            out += '?';
            i += (i + 1 < n && static_cast<unsigned char>(p[i + 1]) >= 0x21 &&
                  static_cast<unsigned char>(p[i + 1]) <= 0x7E)
                     ? 2
                     : 1;
            continue;
        }
        if (c >= 0x20 && c < 0x7F) {
            out += static_cast<char>(c);
            i++;
            continue;
        }
        out += '?';
        i++;
        if (c >= 0xC0)
            for (int k = 0; k < 3 && i < n && (static_cast<unsigned char>(p[i]) & 0xC0) == 0x80;
                 k++)
                i++;
    }
    return out;
}

/* s with every byte outside printable ASCII as '?': a CS value such as a character set name,
 * shown in a field or a warning (which must stay ASCII text without control characters). */
std::string printable(const std::string &s)
{
    std::string out(s);
    for (char &ch : out)
        if (static_cast<unsigned char>(ch) < 0x20 || static_cast<unsigned char>(ch) > 0x7E)
            ch = '?';
    return out;
}

class reader
{
  public:
    reader(struct dcm_report_fields *r) : r_(r)
    {
    }

    void warn(unsigned bit, const char *field, const char *what, const std::string &set)
    {
        r_->warnings |= bit;
        size_t used = std::strlen(r_->warning_text);
        if (used + 1 >= sizeof(r_->warning_text))
            return;
        (void)std::snprintf(r_->warning_text + used, sizeof(r_->warning_text) - used,
                            "%s%s: %s%s%s%s", used ? "; " : "", field, what,
                            set.empty() ? "" : " ('", printable(set).c_str(),
                            set.empty() ? "" : "')");
    }

    /* The raw bytes of tag in it (not searching into sequences); false when absent, empty or
     * not a string. */
    bool raw(DcmItem *it, const DcmTagKey &tag, const char *field, std::string &out)
    {
        DcmElement *e = nullptr;
        out.clear();
        if (it->findAndGetElement(tag, e, OFFalse).bad() || !e)
            return false;
        if (e->getLengthField() > DCM_RF_MAX_VALUE) {
            warn(DCM_RF_TRUNCATED, field, "value over the length limit, ignored", "");
            return false;
        }
        char *v = nullptr;
        Uint32 len = 0;
        if (e->getString(v, len).bad() || !v || len == 0)
            return false;
        out.assign(v, len);
        return true;
    }

    /* Trims spaces (and NUL padding) at both ends and stores s into dst, cut at a UTF-8
     * character boundary when too long. */
    void store(std::string s, char *dst, size_t dstlen, const char *field)
    {
        size_t a = 0, b = s.size();
        while (a < b && (s[a] == ' ' || s[a] == '\0'))
            a++;
        while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\0'))
            b--;
        size_t n = b - a;
        if (n > dstlen - 1) {
            n = dstlen - 1;
            while (n > 0 && (static_cast<unsigned char>(s[a + n]) & 0xC0) == 0x80)
                n--;
            warn(DCM_RF_TRUNCATED, field, "longer than the field, cut", "");
        }
        std::memcpy(dst, s.data() + a, n);
        dst[n] = '\0';
    }

    /* A value of the default repertoire (UI, DA, TM, CS): ASCII, else '?'. */
    bool ascii(DcmItem *it, const DcmTagKey &tag, char *dst, size_t dstlen, const char *field)
    {
        std::string v;
        dst[0] = '\0';
        if (!raw(it, tag, field, v))
            return false;
        std::string a = ascii_fallback(v.data(), v.size());
        if (a != v)
            warn(DCM_RF_LOSSY, field, "non-ASCII bytes in a default-repertoire value", "");
        store(a, dst, dstlen, field);
        return dst[0] != '\0';
    }

    /* A text value (SH, LO, PN) transcoded from cs to UTF-8. */
    bool text(DcmItem *it, const DcmTagKey &tag, charset &cs, const char *delims, char *dst,
              size_t dstlen, const char *field)
    {
        std::string v;
        dst[0] = '\0';
        if (!raw(it, tag, field, v))
            return false;
        OFString out;
        bool done = false;
        if (!cs.ok && cs.jis) {
            std::string j;
            if (jis_convert(cs, v.data(), v.size(), j)) {
                out = OFString(j.c_str(), j.size());
                done = true;
            }
        } else if (cs.ok) {
            try {
                done = cs.conv.convertString(v.data(), v.size(), out, OFString(delims)).good();
            } catch (const std::bad_alloc &) {
                throw;
            } catch (...) {
                done = false;
            }
        }
        std::string u;
        if (done) {
            u.assign(out.c_str(), out.size());
            if (!utf8_valid(u)) {
                done = false;
            } else {
                /* SH, LO and PN allow no control characters (ESC is gone after conversion); a
                 * CR would end an HL7 segment. */
                bool ctl = false;
                for (char &ch : u)
                    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7F) {
                        ch = '?';
                        ctl = true;
                    }
                if (ctl)
                    warn(DCM_RF_LOSSY, field, "control characters, '?'", "");
            }
        }
        if (!done) {
            u = ascii_fallback(v.data(), v.size());
            if (!cs.ok && !cs.jis)
                warn(DCM_RF_LOSSY |
                         (cs.name.empty() ? 0u : static_cast<unsigned>(DCM_RF_UNKNOWN_CHARSET)),
                     field,
                     cs.name.empty() ? "non-ASCII bytes without a Specific Character Set, '?'"
                                     : "character set not convertible, '?'",
                     cs.name);
            else
                warn(DCM_RF_LOSSY, field, "bytes not valid in the character set, '?'",
                     cs.name.empty() ? std::string("ASCII") : cs.name);
        }
        store(u, dst, dstlen, field);
        return dst[0] != '\0';
    }

  private:
    struct dcm_report_fields *r_;
};

/* The first item of seq in it, or nullptr. */
DcmItem *first_item(DcmItem *it, const DcmTagKey &seq)
{
    DcmItem *item = nullptr;
    if (it && it->findAndGetSequenceItem(seq, item, 0).good())
        return item;
    return nullptr;
}

/* A code sequence item: value, scheme, meaning, with the item's own character set if any. */
bool read_code(reader &rd, DcmItem *item, charset &parent, struct dcm_report_fields *r)
{
    std::unique_ptr<charset> own;
    charset *cs = &parent;
    if (item->tagExists(DCM_SpecificCharacterSet, OFFalse)) {
        own.reset(new charset());
        select_charset(item, *own);
        cs = own.get();
    }
    if (!rd.text(item, DCM_CodeValue, *cs, TEXT_DELIMS, r->procedure_code,
                 sizeof(r->procedure_code), "procedure_code") &&
        !rd.text(item, DCM_LongCodeValue, *cs, TEXT_DELIMS, r->procedure_code,
                 sizeof(r->procedure_code), "procedure_code"))
        (void)rd.text(item, DCM_URNCodeValue, *cs, TEXT_DELIMS, r->procedure_code,
                      sizeof(r->procedure_code), "procedure_code");
    (void)rd.text(item, DCM_CodingSchemeDesignator, *cs, TEXT_DELIMS, r->procedure_scheme,
                  sizeof(r->procedure_scheme), "procedure_scheme");
    (void)rd.text(item, DCM_CodeMeaning, *cs, TEXT_DELIMS, r->procedure_meaning,
                  sizeof(r->procedure_meaning), "procedure_meaning");
    return r->procedure_code[0] || r->procedure_meaning[0];
}

void read_fields(DcmFileFormat &ff, struct dcm_report_fields *r)
{
    DcmDataset *ds = ff.getDataset();
    DcmMetaInfo *meta = ff.getMetaInfo();
    reader rd(r);
    charset cs;

    select_charset(ds, cs);
    /* a CS value: bytes outside the default repertoire (a damaged or hostile file) are shown as
     * '?', so the field stays ASCII like the others (found by tests/fuzz/fuzz_dicom.c) */
    const std::string shown = printable(cs.name);
    if (shown != cs.name)
        rd.warn(DCM_RF_LOSSY, "specific_character_set", "bytes outside the default repertoire, '?'",
                "");
    rd.store(shown, r->specific_character_set, sizeof(r->specific_character_set),
             "specific_character_set");
    if (!cs.ok && !cs.jis && !cs.name.empty())
        rd.warn(DCM_RF_UNKNOWN_CHARSET, "specific_character_set", "not supported by the converter",
                cs.name);

    if (!rd.ascii(ds, DCM_SOPClassUID, r->sop_class_uid, sizeof(r->sop_class_uid),
                  "sop_class_uid") &&
        meta)
        (void)rd.ascii(meta, DCM_MediaStorageSOPClassUID, r->sop_class_uid,
                       sizeof(r->sop_class_uid), "sop_class_uid");
    if (!rd.ascii(ds, DCM_SOPInstanceUID, r->sop_instance_uid, sizeof(r->sop_instance_uid),
                  "sop_instance_uid") &&
        meta)
        (void)rd.ascii(meta, DCM_MediaStorageSOPInstanceUID, r->sop_instance_uid,
                       sizeof(r->sop_instance_uid), "sop_instance_uid");
    (void)rd.ascii(ds, DCM_StudyInstanceUID, r->study_uid, sizeof(r->study_uid), "study_uid");
    (void)rd.ascii(ds, DCM_SeriesInstanceUID, r->series_uid, sizeof(r->series_uid), "series_uid");
    (void)rd.ascii(ds, DCM_StudyDate, r->study_date, sizeof(r->study_date), "study_date");
    (void)rd.ascii(ds, DCM_StudyTime, r->study_time, sizeof(r->study_time), "study_time");
    (void)rd.ascii(ds, DCM_TimezoneOffsetFromUTC, r->timezone_offset, sizeof(r->timezone_offset),
                   "timezone_offset");
    (void)rd.ascii(ds, DCM_PatientBirthDate, r->birth_date, sizeof(r->birth_date), "birth_date");
    (void)rd.ascii(ds, DCM_PatientSex, r->sex, sizeof(r->sex), "sex");
    (void)rd.ascii(ds, DCM_Modality, r->modality, sizeof(r->modality), "modality");
    (void)rd.ascii(ds, DCM_BodyPartExamined, r->body_part, sizeof(r->body_part), "body_part");
    (void)rd.ascii(ds, DCM_ViewPosition, r->view_position, sizeof(r->view_position),
                   "view_position");

    (void)rd.text(ds, DCM_PatientID, cs, TEXT_DELIMS, r->patient_id, sizeof(r->patient_id),
                  "patient_id");
    (void)rd.text(ds, DCM_IssuerOfPatientID, cs, TEXT_DELIMS, r->issuer_of_patient_id,
                  sizeof(r->issuer_of_patient_id), "issuer_of_patient_id");
    (void)rd.text(ds, DCM_PatientName, cs, PN_DELIMS, r->patient_name, sizeof(r->patient_name),
                  "patient_name");

    /* The order: top level first, then the first Request Attributes Sequence item (with its own
     * character set when it has one). */
    DcmItem *req = first_item(ds, DCM_RequestAttributesSequence);
    std::unique_ptr<charset> req_own;
    charset *req_cs = &cs;
    if (req && req->tagExists(DCM_SpecificCharacterSet, OFFalse)) {
        req_own.reset(new charset());
        select_charset(req, *req_own);
        req_cs = req_own.get();
    }
    struct {
        const DcmTagKey &tag;
        char *dst;
        size_t len;
        const char *field;
    } order[] = {
        {DCM_AccessionNumber, r->accession, sizeof(r->accession), "accession"},
        {DCM_PlacerOrderNumberImagingServiceRequest, r->placer_order, sizeof(r->placer_order),
         "placer_order"},
        {DCM_FillerOrderNumberImagingServiceRequest, r->filler_order, sizeof(r->filler_order),
         "filler_order"},
        {DCM_RequestedProcedureID, r->requested_procedure_id, sizeof(r->requested_procedure_id),
         "requested_procedure_id"},
        {DCM_ScheduledProcedureStepID, r->scheduled_step_id, sizeof(r->scheduled_step_id),
         "scheduled_step_id"},
    };
    for (auto &o : order)
        if (!rd.text(ds, o.tag, cs, TEXT_DELIMS, o.dst, o.len, o.field) && req)
            (void)rd.text(req, o.tag, *req_cs, TEXT_DELIMS, o.dst, o.len, o.field);

    DcmItem *code = first_item(ds, DCM_ProcedureCodeSequence);
    if (!code || !read_code(rd, code, cs, r)) {
        code = first_item(ds, DCM_RequestedProcedureCodeSequence);
        if (code && read_code(rd, code, cs, r))
            return;
        code = first_item(req, DCM_RequestedProcedureCodeSequence);
        if (code)
            (void)read_code(rd, code, *req_cs, r);
    }
}

cxr_err load_error(const OFCondition &c, const char *path, char *errbuf, size_t errlen)
{
    if (c == EC_MemoryExhausted)
        return px_err(errbuf, errlen, CXR_ENOMEM, "%s: out of memory", path);
    if (c == EC_StreamNotifyClient || c == EC_EndOfStream || c == EC_InvalidStream ||
        c == EC_ItemEnd || c == EC_SequEnd || c == EC_CorruptedData ||
        c == EC_ElemLengthLargerThanItem || c == EC_InvalidTag || c == EC_UnknownVR ||
        c == EC_FileMetaInfoHeaderMissing)
        return px_err(errbuf, errlen, CXR_EPARSE, "%s: truncated or malformed DICOM header: %s",
                      path, c.text());
    return px_err(errbuf, errlen, CXR_EDICOM, "%s: cannot read the DICOM header: %s", path,
                  c.text());
}

/* Opens path, refuses what is not a regular file, over DCM_MAX_FILE_BYTES or not DICOM by its
 * first bytes, then walks its tags and lengths up to the Pixel Data (dcm_scan_header(), over a
 * read-only mapping: only the element headers are touched) so that DCMTK never sees a length
 * that runs past the file or sequences nested deeper than the walker allows (DCMTK's parser
 * recurses per level). */
cxr_err precheck(const char *path, char *errbuf, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return px_err(errbuf, errlen, CXR_EIO, "%s: %s", path, std::strerror(errno));
    struct stat st;
    cxr_err err = CXR_OK;
    unsigned char head[132];
    ssize_t got = 0;
    if (fstat(fd, &st) != 0) {
        err = px_err(errbuf, errlen, CXR_EIO, "%s: %s", path, std::strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        err = px_err(errbuf, errlen, CXR_EIO, "%s: not a regular file", path);
    } else if (static_cast<unsigned long long>(st.st_size) > DCM_MAX_FILE_BYTES) {
        err = px_err(errbuf, errlen, CXR_ELIMIT, "%s: file is larger than %zu MiB", path,
                     DCM_MAX_FILE_BYTES >> 20);
    } else {
        while (static_cast<size_t>(got) < sizeof(head)) {
            ssize_t n = read(fd, head + got, sizeof(head) - static_cast<size_t>(got));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            got += n;
        }
        if (px_detect(head, static_cast<size_t>(got)) != PX_FMT_DICOM) {
            err = px_err(errbuf, errlen, CXR_EPARSE,
                         "%s: not a DICOM file (no DICM preamble and no dataset start)", path);
        } else {
            size_t len = static_cast<size_t>(st.st_size);
            void *map = mmap(nullptr, len, PROT_READ, MAP_PRIVATE, fd, 0);
            if (map == MAP_FAILED) {
                err = px_err(errbuf, errlen, errno == ENOMEM ? CXR_ENOMEM : CXR_EIO,
                             "%s: cannot map the file: %s", path, std::strerror(errno));
            } else {
                err = dcm_scan_header(map, len, path, errbuf, errlen);
                (void)munmap(map, len);
            }
        }
    }
    (void)close(fd);
    return err;
}

} /* namespace */

extern "C" cxr_err dcm_read_report_fields(const char *path, struct dcm_report_fields *ret,
                                          char *errbuf, size_t errlen)
{
    if (!path || !ret)
        return px_err(errbuf, errlen, CXR_EINVAL, "dcm_read_report_fields: no path or result");
    std::memset(ret, 0, sizeof(*ret));
    try {
        if (dcm_global_init() != CXR_OK)
            return px_err(errbuf, errlen, CXR_EDICOM, "%s: the DICOM data dictionary is missing",
                          path);
        cxr_err err = precheck(path, errbuf, errlen);
        if (err)
            return err;
        DcmFileFormat ff;
        OFCondition c = ff.loadFileUntilTag(path, EXS_Unknown, EGL_noChange, 4096, ERM_autoDetect,
                                            DCM_PixelData);
        if (c.bad())
            return load_error(c, path, errbuf, errlen);
        if (!ff.getDataset())
            return px_err(errbuf, errlen, CXR_EPARSE, "%s: no data set", path);
        read_fields(ff, ret);
        if (!ret->sop_class_uid[0] && !ret->sop_instance_uid[0] && !ret->study_uid[0] &&
            !ret->modality[0]) {
            std::memset(ret, 0, sizeof(*ret));
            return px_err(errbuf, errlen, CXR_EPARSE,
                          "%s: not a DICOM image header (no SOP Class, SOP Instance, Study "
                          "Instance UID or Modality)",
                          path);
        }
        return CXR_OK;
    } catch (const std::bad_alloc &) {
        std::memset(ret, 0, sizeof(*ret));
        return px_err(errbuf, errlen, CXR_ENOMEM, "%s: out of memory", path);
    } catch (...) {
        std::memset(ret, 0, sizeof(*ret));
        return px_err(errbuf, errlen, CXR_EDICOM, "%s: DICOM header reader failed", path);
    }
}
