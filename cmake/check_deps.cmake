# check_deps.cmake - run after a binary is linked (cmake -P): fails the build when the binary
# needs a shared library it must not, so that a BLAS-free build cannot quietly
# pick up OpenBLAS or libgomp (DESIGN.md: the inference runtime builds with libc and libm alone).
#
# Inputs (-D): OBJDUMP, FILE, FORBID and ALLOW: regexes separated by ",". A NEEDED entry fails
# if it matches any FORBID regex, or if ALLOW is given and it matches no ALLOW regex.
foreach(v OBJDUMP FILE)
  if(NOT ${v})
    message(FATAL_ERROR "check_deps: ${v} not set")
  endif()
endforeach()
execute_process(COMMAND "${OBJDUMP}" -p "${FILE}" OUTPUT_VARIABLE out ERROR_VARIABLE err
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "check_deps: ${OBJDUMP} -p ${FILE} failed: ${err}")
endif()
string(REPLACE "," ";" forbid "${FORBID}")
string(REPLACE "," ";" allow "${ALLOW}")

string(REGEX MATCHALL "NEEDED[ \t]+[^ \t\r\n]+" lines "${out}")
set(bad "")
foreach(line IN LISTS lines)
  string(REGEX REPLACE "NEEDED[ \t]+" "" lib "${line}")
  set(ok TRUE)
  foreach(re IN LISTS forbid)
    if(lib MATCHES "${re}")
      set(ok FALSE)
    endif()
  endforeach()
  if(ok AND allow)
    set(ok FALSE)
    foreach(re IN LISTS allow)
      if(lib MATCHES "${re}")
        set(ok TRUE)
      endif()
    endforeach()
  endif()
  if(NOT ok)
    list(APPEND bad "${lib}")
  endif()
endforeach()
if(bad)
  get_filename_component(name "${FILE}" NAME)
  string(REPLACE ";" ", " bad "${bad}")
  # remove the binary, or the next build would find it up to date and skip this check
  file(REMOVE "${FILE}")
  message(FATAL_ERROR
    "\n*** sparrow: ${name} links ${bad}, which this configuration excludes "
    "(SPARROW_BLAS=${BLAS}, SPARROW_THREADS=${THREADS}).\n"
    "*** SPARROW_BLAS=OFF allows no BLAS, no build an OpenMP runtime, BLAS and threads OFF "
    "nothing but libc and libm. Find what pulled it in.\n")
endif()
