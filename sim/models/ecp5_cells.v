// Behavioural model of the ECP5 LUT4 primitive, for simulating netlists that
// instantiate it (PEArray(impl="ecp5")) in Verilator. Output = INIT[{D,C,B,A}].
module LUT4 #(parameter [15:0] INIT = 16'h0000) (input A, input B, input C, input D, output Z);
    assign Z = INIT[{D, C, B, A}];
endmodule

// ECP5 flip-flop as PEArray(impl="ecp5") instantiates it: CEMUX="1" (always
// enabled), LSR tied low, rising clock.
module TRELLIS_FF #(parameter GSR = "ENABLED", parameter CEMUX = "1", parameter CLKMUX = "CLK",
                    parameter LSRMUX = "LSR", parameter REGSET = "RESET", parameter SRMODE = "LSR_OVER_CE")
                   (input CLK, input LSR, input DI, output reg Q);
    initial Q = 1'b0;
    always @(posedge CLK) Q <= DI;
endmodule
