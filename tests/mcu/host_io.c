/* host_io.c - the host side of harness.c: stdout and main. */
#include <stdio.h>

void mcu_puts(const char *s);
int mcu_main(void);

void mcu_puts(const char *s) { fputs(s, stdout); }

int main(void) { return mcu_main(); }
