/*
 * triage.c - the triage rule (model.h, "the triage rule"): class probabilities to a priority.
 *
 * DESIGN
 * - The rule is data: one threshold per class and the index of the normal class. It comes
 *   from the model's metadata (the operating points the trainer chose on validation data),
 *   else from defaults (0.5 everywhere, the class named "Normal"), and the daemon's
 *   configuration may override single classes (nn_triage_rule_set, marked `overridden`).
 * - Metadata is untrusted input: every item of NN_META_TRIAGE_THRESHOLDS is checked (syntax,
 *   a number in [0,1], a class the model has, no duplicates, every class present) and the
 *   first problem is named in errbuf. Nothing is written to *ret unless all is well.
 * - nn_triage_apply is pure and allocation-free, so workers may call it concurrently.
 * - Where the thresholds came from is not stored in the rule: nn_triage_rule_text derives it
 *   (config: overridden; model: the model has the metadata key; else default), so the struct
 *   stays the one declared in model.h.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

#define TRIAGE_DEFAULT_THRESHOLD 0.5f
#define TRIAGE_DEFAULT_NORMAL "Normal"

const char *nn_priority_name(enum nn_priority p)
{
    switch (p) {
    case NN_PRIO_URGENT: return "urgent";
    case NN_PRIO_ROUTINE: return "routine";
    case NN_PRIO_NORMAL: return "normal";
    case NN_PRIO_NONE: break;
    }
    return NULL;
}

/* snprintf-like appending: *pos counts what was needed, the buffer gets what fits. */
static void put(char *buf, size_t len, size_t *pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void put(char *buf, size_t len, size_t *pos, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(*pos < len ? buf + *pos : NULL, *pos < len ? len - *pos : 0, fmt, ap);
    va_end(ap);
    if (n > 0)
        *pos += (size_t)n;
}

/* A threshold as stored: at most 4 decimals, trailing zeros dropped ("0.5", "0.412"). */
static void fmt_threshold(float t, char *out, size_t len)
{
    char *p;

    (void)snprintf(out, len, "%.4f", (double)t);
    p = strchr(out, '.');
    if (!p)
        return;
    for (p = out + strlen(out) - 1; *p == '0'; p--)
        *p = '\0';
    if (*p == '.')
        *p = '\0';
}

static int class_index(const nn_model *model, const char *name, size_t name_len)
{
    for (int c = 0; c < nn_model_num_classes(model); c++) {
        const char *cn = nn_model_class_name(model, c);
        if (strlen(cn) == name_len && !memcmp(cn, name, name_len))
            return c;
    }
    return -1;
}

/* "'COVID-19', 'Lung Opacity', ..." for error messages. */
static void list_classes(const nn_model *model, char *buf, size_t len)
{
    size_t pos = 0;

    buf[0] = '\0';
    for (int c = 0; c < nn_model_num_classes(model); c++)
        put(buf, len, &pos, "%s'%s'", c ? ", " : "", nn_model_class_name(model, c));
}

static bool is_space(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* Parses "0.412" (surrounding blanks allowed) into [0,1]; false on anything else. */
static bool parse_unit(const char *s, size_t len, float *ret)
{
    char tmp[32], *end;
    double v;

    while (len && is_space(*s)) {
        s++;
        len--;
    }
    while (len && is_space(s[len - 1]))
        len--;
    if (!len || len >= sizeof(tmp))
        return false;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    /* strtod would accept "nan", "inf" and hex; thresholds are plain decimals. */
    for (size_t i = 0; i < len; i++)
        if (!strchr("0123456789.eE+-", tmp[i]))
            return false;
    v = strtod(tmp, &end);
    if (*end || !(v >= 0.0 && v <= 1.0))
        return false;
    *ret = (float)v;
    return true;
}

/* NN_META_TRIAGE_THRESHOLDS: "Class=0.412;Other Class=0.5" naming every class once. */
static cxr_err parse_thresholds(const nn_model *model, const char *text, float *thr,
                                char *errbuf, size_t errlen)
{
    bool seen[NN_MAX_CLASSES] = {false};
    int nc = nn_model_num_classes(model);
    const char *p = text;
    char classes[NN_MAX_CLASSES * (NN_NAME_MAX + 4)];

    for (;;) {
        const char *end = strchr(p, ';'), *eq, *name = p;
        size_t len = end ? (size_t)(end - p) : strlen(p), nlen;
        int c;

        eq = memchr(p, '=', len);
        if (!eq)
            return cxr_errf(errbuf, errlen, CXR_EMODEL,
                            "metadata %s: item '%.*s' is not CLASS=THRESHOLD",
                            NN_META_TRIAGE_THRESHOLDS, (int)len, p);
        while (name < eq && is_space(*name))
            name++;
        nlen = (size_t)(eq - name);
        while (nlen && is_space(name[nlen - 1]))
            nlen--;
        c = class_index(model, name, nlen);
        if (c < 0) {
            list_classes(model, classes, sizeof(classes));
            return cxr_errf(errbuf, errlen, CXR_EMODEL,
                            "metadata %s: class '%.*s' is not one of the model's classes (%s)",
                            NN_META_TRIAGE_THRESHOLDS, (int)nlen, name, classes);
        }
        if (seen[c])
            return cxr_errf(errbuf, errlen, CXR_EMODEL, "metadata %s: class '%.*s' is given twice",
                            NN_META_TRIAGE_THRESHOLDS, (int)nlen, name);
        if (!parse_unit(eq + 1, len - (size_t)(eq + 1 - p), &thr[c]))
            return cxr_errf(errbuf, errlen, CXR_EMODEL,
                            "metadata %s: threshold '%.*s' of class '%.*s' is not a number "
                            "in [0,1]",
                            NN_META_TRIAGE_THRESHOLDS, (int)(len - (size_t)(eq + 1 - p)), eq + 1,
                            (int)nlen, name);
        seen[c] = true;
        if (!end)
            break;
        p = end + 1;
    }
    for (int c = 0; c < nc; c++)
        if (!seen[c])
            return cxr_errf(errbuf, errlen, CXR_EMODEL,
                            "metadata %s: class '%s' has no threshold (every class needs one)",
                            NN_META_TRIAGE_THRESHOLDS, nn_model_class_name(model, c));
    return CXR_OK;
}

cxr_err nn_triage_rule_init(const nn_model *model, struct nn_triage_rule *ret, char *errbuf,
                            size_t errlen)
{
    struct nn_triage_rule r;
    const char *thr = nn_model_meta(model, NN_META_TRIAGE_THRESHOLDS);
    const char *normal = nn_model_meta(model, NN_META_TRIAGE_NORMAL);
    cxr_err err;

    memset(&r, 0, sizeof(r));
    r.n_classes = nn_model_num_classes(model);
    if (r.n_classes < 1 || r.n_classes > NN_MAX_CLASSES)
        return cxr_errf(errbuf, errlen, CXR_EMODEL, "the model has %d classes", r.n_classes);
    for (int c = 0; c < r.n_classes; c++)
        r.threshold[c] = TRIAGE_DEFAULT_THRESHOLD;
    if (thr) {
        err = parse_thresholds(model, thr, r.threshold, errbuf, errlen);
        if (err)
            return err;
    }
    if (normal) {
        r.normal_class = class_index(model, normal, strlen(normal));
        if (r.normal_class < 0) {
            char classes[NN_MAX_CLASSES * (NN_NAME_MAX + 4)];
            list_classes(model, classes, sizeof(classes));
            return cxr_errf(errbuf, errlen, CXR_EMODEL,
                            "metadata %s: class '%s' is not one of the model's classes (%s)",
                            NN_META_TRIAGE_NORMAL, normal, classes);
        }
    } else {
        r.normal_class = class_index(model, TRIAGE_DEFAULT_NORMAL, strlen(TRIAGE_DEFAULT_NORMAL));
    }
    *ret = r;
    return CXR_OK;
}

cxr_err nn_triage_rule_set(struct nn_triage_rule *rule, const nn_model *model,
                           const char *class_name, float threshold, char *errbuf, size_t errlen)
{
    int c = class_index(model, class_name, strlen(class_name));

    if (c < 0 || c >= rule->n_classes) {
        char classes[NN_MAX_CLASSES * (NN_NAME_MAX + 4)];
        list_classes(model, classes, sizeof(classes));
        return cxr_errf(errbuf, errlen, CXR_ENOTFOUND,
                        "triage threshold for class '%s': the model has no such class (%s)",
                        class_name, classes);
    }
    if (!(threshold >= 0.0f && threshold <= 1.0f))
        return cxr_errf(errbuf, errlen, CXR_EINVAL,
                        "triage threshold for class '%s': %g is outside [0,1]", class_name,
                        (double)threshold);
    rule->threshold[c] = threshold;
    rule->overridden[c] = true;
    return CXR_OK;
}

enum nn_priority nn_triage_apply(const struct nn_triage_rule *rule, const nn_model *model,
                                 const float *probs, char *reason, size_t len)
{
    int best = -1, n_trig = 0;
    size_t pos = 0;
    char t[16];

    if (!reason)
        len = 0;
    if (len)
        reason[0] = '\0';
    if (!rule || !model || !probs || rule->n_classes != nn_model_num_classes(model)) {
        put(reason, len, &pos, "the triage rule does not fit the model");
        return NN_PRIO_NONE;
    }
    for (int c = 0; c < rule->n_classes; c++)
        if (!isfinite(probs[c])) {
            put(reason, len, &pos, "score of '%s' is not a number", nn_model_class_name(model, c));
            return NN_PRIO_NONE;
        }
    for (int c = 0; c < rule->n_classes; c++) {
        if (c == rule->normal_class || probs[c] < rule->threshold[c])
            continue;
        n_trig++;
        if (best < 0 || probs[c] > probs[best])
            best = c;
    }
    if (best >= 0) {
        fmt_threshold(rule->threshold[best], t, sizeof(t));
        put(reason, len, &pos, "%s %.4f >= %s", nn_model_class_name(model, best),
            (double)probs[best], t);
        /* The others that also triggered, so a reader sees the whole picture. */
        for (int c = 0; n_trig > 1 && c < rule->n_classes; c++) {
            if (c == best || c == rule->normal_class || probs[c] < rule->threshold[c])
                continue;
            fmt_threshold(rule->threshold[c], t, sizeof(t));
            put(reason, len, &pos, "; also %s %.4f >= %s", nn_model_class_name(model, c),
                (double)probs[c], t);
        }
        return NN_PRIO_URGENT;
    }
    if (rule->normal_class < 0) {
        put(reason, len, &pos, "no class at its threshold; the model has no normal class");
        return NN_PRIO_ROUTINE;
    }
    fmt_threshold(rule->threshold[rule->normal_class], t, sizeof(t));
    if (probs[rule->normal_class] >= rule->threshold[rule->normal_class]) {
        put(reason, len, &pos, "%s %.4f >= %s; no other class at its threshold",
            nn_model_class_name(model, rule->normal_class), (double)probs[rule->normal_class], t);
        return NN_PRIO_NORMAL;
    }
    put(reason, len, &pos, "no class at its threshold; %s %.4f < %s",
        nn_model_class_name(model, rule->normal_class), (double)probs[rule->normal_class], t);
    return NN_PRIO_ROUTINE;
}

size_t nn_triage_rule_text(const struct nn_triage_rule *rule, const nn_model *model, char *buf,
                           size_t len)
{
    bool from_model = nn_model_meta(model, NN_META_TRIAGE_THRESHOLDS) != NULL;
    int n_over = 0, first = 1;
    size_t pos = 0;
    char t[16];

    if (!buf)
        len = 0;
    if (len)
        buf[0] = '\0';
    put(buf, len, &pos, "%s urgent:", NN_TRIAGE_RULE_NAME);
    for (int c = 0; c < rule->n_classes; c++) {
        if (c == rule->normal_class)
            continue;
        fmt_threshold(rule->threshold[c], t, sizeof(t));
        put(buf, len, &pos, " %s>=%s", nn_model_class_name(model, c), t);
    }
    if (rule->normal_class >= 0) {
        fmt_threshold(rule->threshold[rule->normal_class], t, sizeof(t));
        put(buf, len, &pos, "; normal: %s>=%s", nn_model_class_name(model, rule->normal_class), t);
    } else {
        put(buf, len, &pos, "; normal: none");
    }
    for (int c = 0; c < rule->n_classes; c++)
        n_over += rule->overridden[c] ? 1 : 0;
    if (n_over == rule->n_classes) {
        put(buf, len, &pos, " (source: config)");
        return pos;
    }
    put(buf, len, &pos, " (source: %s", from_model ? "model" : "default");
    for (int c = 0; c < rule->n_classes; c++) {
        if (!rule->overridden[c])
            continue;
        put(buf, len, &pos, "%s%s", first ? "; config: " : ", ", nn_model_class_name(model, c));
        first = 0;
    }
    put(buf, len, &pos, ")");
    return pos;
}
