/* export.h - `cxrtriage-train export`: a deployment copy of a model file. */
#ifndef CXR_EXPORT_H
#define CXR_EXPORT_H

int export_main(int argc, char **argv);

#endif
