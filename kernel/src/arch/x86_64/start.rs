//! Entry: the Multiboot2 header, the PVH ELF note and the 32-bit stub that enters long mode.
//!
//! One stub serves both boot protocols. GRUB and iPXE (Multiboot2) enter with
//! `eax = 0x36d76289` and `ebx` pointing at the boot information; QEMU's `-kernel`
//! (PVH, `XEN_ELFNOTE_PHYS32_ENTRY`) enters with `ebx` pointing at `hvm_start_info`.
//! Both arrive in 32-bit protected mode with paging off. The stub records the TSC
//! (boot time is measured from here), zeroes `.bss`, identity-maps the first 4 GiB
//! with 2 MiB writable, executable pages, enables PAE, SSE, long mode and (when
//! CPUID reports it) EFER.NXE, and calls `kmain(magic, info)`. No page is NX yet:
//! `mm::paging::init` applies the W^X mapping policy and maps the rest of memory.

use core::arch::global_asm;

/// Multiboot2 bootloader magic in `eax`.
pub const MULTIBOOT2_BOOTLOADER_MAGIC: u32 = 0x36d7_6289;

global_asm!(
    r#"
    .section .boot, "a"
    .align 8
mb2_header_start:
    .long 0xe85250d6
    .long 0
    .long mb2_header_end - mb2_header_start
    .long 0x100000000 - (0xe85250d6 + (mb2_header_end - mb2_header_start))
    .align 8
    .short 0
    .short 0
    .long 8
mb2_header_end:
    .text
    "#,
    options(att_syntax)
);

global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .align 4
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .align 4
    .quad _start32
    .align 4
    .text
    "#,
    options(att_syntax)
);

global_asm!(
    r#"
    .section .data.boot, "aw"
    .align 8
    .global BOOT_TSC
BOOT_TSC:
    .quad 0
boot_magic:
    .long 0
boot_info:
    .long 0
    .align 16
gdt64:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
gdt64_end:
gdt64_ptr:
    .short gdt64_end - gdt64 - 1
    .long gdt64

    .section .bss.boot, "aw", @nobits
    .align 4096
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4096 * 4
    .skip 256 * 1024
boot_stack_top:

    .section .text.boot, "ax"
    .code32
    .global _start32
_start32:
    cli
    cld
    mov %eax, boot_magic
    mov %ebx, boot_info
    rdtsc
    mov %eax, BOOT_TSC
    mov %edx, BOOT_TSC + 4

    /* zero .bss (the page tables and the stack live there) */
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb

    mov $boot_stack_top, %esp

    /* PML4[0] -> PDPT; PDPT[0..4] -> four page directories */
    mov $boot_pdpt, %eax
    or $3, %eax
    mov %eax, boot_pml4
    mov $boot_pd, %eax
    or $3, %eax
    mov $boot_pdpt, %edi
    mov $4, %ecx
1:
    mov %eax, (%edi)
    add $4096, %eax
    add $8, %edi
    loop 1b

    /* 2048 x 2 MiB pages: present | writable | huge */
    mov $boot_pd, %edi
    mov $0x83, %eax
    mov $2048, %ecx
2:
    mov %eax, (%edi)
    movl $0, 4(%edi)
    add $0x200000, %eax
    add $8, %edi
    loop 2b

    /* CR4: PAE | OSFXSR | OSXMMEXCPT */
    mov %cr4, %eax
    or $((1 << 5) | (1 << 9) | (1 << 10)), %eax
    mov %eax, %cr4

    mov $boot_pml4, %eax
    mov %eax, %cr3

    /* EFER.NXE only if CPUID 0x80000001 EDX bit 20 says the CPU has NX: setting it
       otherwise raises #GP. mm/paging.rs reads EFER to learn whether it may set NX
       bits (on a CPU without NX they are reserved bits). ebx was saved above. */
    xor %esi, %esi
    mov $0x80000000, %eax
    cpuid
    cmp $0x80000001, %eax
    jb 4f
    mov $0x80000001, %eax
    cpuid
    bt $20, %edx
    jnc 4f
    mov $(1 << 11), %esi
4:
    /* EFER: LME (| NXE) */
    mov $0xc0000080, %ecx
    rdmsr
    or $(1 << 8), %eax
    or %esi, %eax
    wrmsr

    /* CR0: PG | MP | PE, clear EM and TS */
    mov %cr0, %eax
    and $0xfffffff3, %eax
    or $0x80000003, %eax
    mov %eax, %cr0

    lgdt gdt64_ptr
    ljmp $0x08, $start64

    .code64
start64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %ax, %ax
    mov %ax, %fs
    mov %ax, %gs
    fninit
    movabs $boot_stack_top, %rsp
    xor %ebp, %ebp
    movl boot_magic(%rip), %edi
    movl boot_info(%rip), %esi
    call kmain
3:
    cli
    hlt
    jmp 3b
    .text
    "#,
    options(att_syntax)
);

extern "C" {
    static BOOT_TSC: u64;
}

/// The TSC value recorded by the first instruction of the kernel.
pub fn boot_tsc() -> u64 {
    // SAFETY: written once by the entry stub before any Rust code runs, read-only afterwards.
    unsafe { core::ptr::addr_of!(BOOT_TSC).read_volatile() }
}
