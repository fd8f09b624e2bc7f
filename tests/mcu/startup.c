/*
 * startup.c - bare-metal start-up for the Cortex-M4F of QEMU's MPS2 AN386 board (and any
 * Cortex-M4F): the vector table, a reset handler that enables the FPU (CPACR: full access to
 * CP10 and CP11) before any floating-point instruction runs, copies .data from flash, zeroes
 * .bss and calls mcu_main; output and exit through ARM semihosting (the BKPT 0xAB call:
 * SYS_WRITE0 prints a NUL-terminated string, SYS_EXIT stops the simulator, which then exits
 * 0 for ADP_Stopped_ApplicationExit and 1 for any other reason). Linker script: mps2_an386.ld.
 */
#include <stdint.h>

int mcu_main(void);
void mcu_puts(const char *s);
void Reset_Handler(void);
void Fault_Handler(void);

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;

#define SYS_WRITE0 0x04
#define SYS_EXIT 0x18
#define ADP_STOPPED_APPLICATION_EXIT 0x20026
#define ADP_STOPPED_RUNTIME_ERROR 0x20023

static int semihost(int op, const void *arg) {
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void mcu_puts(const char *s) { (void)semihost(SYS_WRITE0, s); }

static void __attribute__((noreturn)) mcu_exit(int ok) {
    for (;;)
        (void)semihost(SYS_EXIT, (const void *)(uintptr_t)(ok ? ADP_STOPPED_APPLICATION_EXIT
                                                              : ADP_STOPPED_RUNTIME_ERROR));
}

/* Any fault: report it and stop the simulator rather than spin. */
void Fault_Handler(void) {
    mcu_puts("fault\n");
    mcu_exit(0);
}

static void __attribute__((noreturn, used)) reset_c(void) {
    const uint32_t *src = &_sidata;
    for (uint32_t *dst = &_sdata; dst < &_edata;) *dst++ = *src++;
    for (uint32_t *dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    mcu_exit(mcu_main() == 0);
}

/* Naked: the compiler may not touch a floating-point register before CPACR allows it. */
void __attribute__((naked, noreturn)) Reset_Handler(void) {
    __asm__ volatile("ldr r0, =0xE000ED88\n" /* CPACR */
                     "ldr r1, [r0]\n"
                     "orr r1, r1, #0xF00000\n" /* CP10, CP11: full access */
                     "str r1, [r0]\n"
                     "dsb\n"
                     "isb\n"
                     "b reset_c\n");
}

/* The initial stack pointer, then the exception handlers of the Cortex-M4 (1-15). */
__attribute__((section(".isr_vector"), used)) static const uintptr_t vectors[16] = {
    (uintptr_t)&_estack,        (uintptr_t)Reset_Handler, (uintptr_t)Fault_Handler, /* NMI */
    (uintptr_t)Fault_Handler, /* HardFault */
    (uintptr_t)Fault_Handler, /* MemManage */
    (uintptr_t)Fault_Handler, /* BusFault */
    (uintptr_t)Fault_Handler, /* UsageFault */
};
